"""Regenerate engine/rpc/gen/ from engine/rpc/*.proto (run: `make proto`).

The generated files are committed; tests/rpc/test_proto_drift.py fails when they drift."""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "engine" / "rpc"
GEN_DIR = PROTO_DIR / "gen"
PROTOS = ("orchard.proto", "engine.proto")  # the worker protocol; the engine process's local API


def generate(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    include = str(Path(protoc.__file__).parent / "_proto")
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            *(str(PROTO_DIR / name) for name in PROTOS),
        ]
    )
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    for name in PROTOS:
        stem = Path(name).stem
        grpc_file = out_dir / f"{stem}_pb2_grpc.py"
        # grpc_tools writes an absolute import; make it package-relative.
        text = re.sub(
            rf"^import {stem}_pb2 as", f"from . import {stem}_pb2 as", grpc_file.read_text(),
            flags=re.M,
        )  # fmt: skip
        # The version guard pins the exact grpcio used to generate; any grpcio >= our minimum is fine.
        text = re.sub(
            r"GRPC_GENERATED_VERSION = '[^']+'", "GRPC_GENERATED_VERSION = '1.66.0'", text
        )
        grpc_file.write_text(text)
    (out_dir / "__init__.py").write_text(
        f'"""Generated from {", ".join("../" + n for n in PROTOS)} by scripts/gen_proto.py."""\n'
    )


def main() -> int:
    if "--check" in sys.argv:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            drift = [
                p.name
                for p in Path(tmp).iterdir()
                if p.read_text() != (GEN_DIR / p.name).read_text()
            ]
        if drift:
            sys.stderr.write(f"generated code is out of date: {drift}; run `make proto`\n")
            return 1
        return 0
    generate(GEN_DIR)
    return 0


if __name__ == "__main__":
    sys.exit(main())
