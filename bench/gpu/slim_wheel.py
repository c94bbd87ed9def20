"""A slimmer `mlx-cuda-13` wheel for one GPU: one device call instead of two.

The device tool carries at most 64 MiB a call, and `mlx-cuda-13` is 90 MB, so installing it
took two calls within the 30 s a machine stays warm (../shared/gpu.md). Most of the wheel is
`libmlx.so`'s `.nv_fatbin` section: the same CUDA kernels compiled for sm_75, 80, 90, 100,
120 and 121 (plus PTX for 120). A machine runs only its own architecture's image, and the
CUDA runtime reads only the image it picks, so this script keeps that one, overwrites the
others' bytes with zeros (the fatbin's layout and sizes stay as they are, so nothing that
points into it moves), strips the symbol table (`strip --strip-unneeded`: the dynamic
symbols stay), fixes the wheel's RECORD and zips it again. Zeros compress to nothing:
90 MB -> 30 MB for sm_90 (H100 and H200), which fits one call with the other wheels.

A wheel made this way runs only on the architecture it keeps. It is a benchmark convenience,
never a thing to ship. Not yet tried on a device (2026-12-07: no GPU machine could be
started that session); checked here only that the fatbin parses into 99 fatbins of
sm_75/80/90/100/120/121 cubins plus compute_120 PTX, and that the kept images are intact.

    python bench/gpu/slim_wheel.py mlx_cuda_13-0.32.4-...whl OUT_DIR [--sm 90]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import logging
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

log = logging.getLogger("slim_wheel")

FATBIN_MAGIC = 0xBA55ED50
LIBRARY = "mlx/lib/libmlx.so"


def section(path: Path, name: str) -> tuple[int, int]:
    """(file offset, size) of an ELF section, read off ``readelf -S -W``."""
    out = subprocess.run(["readelf", "-S", "-W", str(path)], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    for line in out.splitlines():
        m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+[0-9a-f]+\s+([0-9a-f]+)\s+([0-9a-f]+)", line)
        if m and m.group(1) == name:
            return int(m.group(2), 16), int(m.group(3), 16)
    raise SystemExit(f"{path}: no {name} section")


def keep_one_arch(buf: bytearray, offset: int, size: int, sm: int) -> tuple[int, int]:
    """Zero every fatbin image that is not an sm_<sm> cubin; (bytes kept, bytes zeroed).
    Layout: fatbins one after another, each a 16-byte header (magic u32, version u16,
    header size u16, size u64) and entries (kind u16, version u16, header size u32, padded
    payload size u32, ..., sm u32 at offset 28), each followed by its payload."""
    data = memoryview(buf)[offset : offset + size]
    p = kept = zeroed = 0
    while p + 16 <= len(data):
        magic, _, header, fat = struct.unpack_from("<IHHQ", data, p)
        if magic != FATBIN_MAGIC:
            p += 8  # fatbins are 8-byte aligned
            continue
        q, end = p + header, p + header + fat
        while q < end:
            kind, _, entry_header, padded = struct.unpack_from("<HHII", data, q)
            arch = struct.unpack_from("<I", data, q + 28)[0]
            payload = slice(q + entry_header, q + entry_header + padded)
            if kind == 2 and arch == sm:
                kept += padded
            else:
                data[payload] = bytes(padded)
                zeroed += padded
            q += entry_header + padded
        p = end
    if not kept:
        raise SystemExit(f"no sm_{sm} cubin in the fatbin: this wheel cannot run there")
    return kept, zeroed


def record_line(root: Path, name: str) -> str:
    data = (root / name).read_bytes()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("wheel", type=Path)
    p.add_argument("out", type=Path, help="folder for the slim wheel (same file name)")
    p.add_argument("--sm", type=int, default=90, help="architecture to keep (90: H100, H200)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with zipfile.ZipFile(args.wheel) as z:
            z.extractall(root)
        lib = root / LIBRARY
        buf = bytearray(lib.read_bytes())
        kept, zeroed = keep_one_arch(buf, *section(lib, ".nv_fatbin"), args.sm)
        lib.write_bytes(buf)
        subprocess.run(["strip", "--strip-unneeded", str(lib)], check=True)
        record = next(root.glob("*.dist-info/RECORD"))
        lines = [record_line(root, LIBRARY) if x.split(",")[0] == LIBRARY else x
                 for x in record.read_text().splitlines()]  # fmt: skip
        record.write_text("\n".join(lines) + "\n")
        args.out.mkdir(parents=True, exist_ok=True)
        out = args.out / args.wheel.name
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
            for f in sorted(root.rglob("*")):
                if f.is_file():
                    z.write(f, f.relative_to(root).as_posix())
    log.info("%s: kept %.1f MB of sm_%d cubins, zeroed %.1f MB; %.1f MB -> %.1f MB", out,
             kept / 1e6, args.sm, zeroed / 1e6, args.wheel.stat().st_size / 1e6,
             out.stat().st_size / 1e6)  # fmt: skip
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
