"""The wire checksum: what a worker checks a bulk stream against, so sha256 leaves its path.

A file's sha256 is its name in the worker's cache (``files/<sha256>/``, HasFile, SetupJob's
files), and the coordinator computes it. Computing it again on the worker, as every byte
arrives, costs a core about 1 s per GiB even with SHA-NI (ARMv8's SHA2 instructions do
2 GB/s or so): on a 10 GbE or Thunderbolt link, or a machine whose cores are busy, it is
what bounds the transfer. So the coordinator computes a fast non-cryptographic checksum,
xxh3-128 (about 30 GB/s a core; rsync >= 3.2 checks its transfers with xxh128 for the same
reason), in the same pass over the file as the sha256, and the worker checks the stream
against that one: a link's or a disk's damaged, lost or reordered bytes, a kept partial
prefix that is not this file's, a file that changed on the coordinator after it was hashed.

What it does not do is prove the sha256: a coordinator could announce one file's sha256 with
another's checksum. The caller is the paired, authenticated coordinator (signed calls over
TLS pinned to the worker's certificate, or the run token of a local worker), so the worker
takes its word for the name, and only its word: a file stored this way carries a marker
naming who vouched for it (engine/worker/files.py), and counts as held for that caller alone
until the worker has checked its sha256 itself (it does before another caller's job uses
it). See docs/architecture.md (the file cache) and docs/reliability.md row 23.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import xxhash

from engine.worker.errors import InvalidRequest

ALGORITHM = "xxh3-128"
_VALUE = re.compile(r"^[0-9a-f]{32}$")
_READ_BYTES = 256 * 1024


def new_checksum() -> xxhash.xxh3_128:
    return xxhash.xxh3_128()


def tagged(hexdigest: str) -> str:
    """``"xxh3-128:<32 hex>"``, as OpenFile carries it: the algorithm named, so a later one can
    come without confusing a worker that only knows this one."""
    return f"{ALGORITHM}:{hexdigest}"


def parse_checksum(text: str) -> str | None:
    """The expected xxh3-128 hex digest from OpenFile's ``checksum``; None when there is none
    or it names an algorithm this worker does not know (the worker then checks the sha256,
    as before the checksum existed). A malformed xxh3-128 value is refused."""
    if not text:
        return None
    algorithm, _, value = text.partition(":")
    if algorithm != ALGORITHM:
        return None
    if not _VALUE.match(value):
        raise InvalidRequest(f"checksum {text[:80]!r}: expected '{ALGORITHM}:' and 32 lowercase hex digits")  # fmt: skip
    return value


def file_digests(path: str | Path) -> tuple[str, str]:
    """(sha256, tagged xxh3-128) of a file, from one read of it: the checksum then vouches for
    the very bytes the sha256 names."""
    sha, fast = hashlib.sha256(), new_checksum()
    for block in _blocks(path):
        sha.update(block)
        fast.update(block)
    return sha.hexdigest(), tagged(fast.hexdigest())


def file_checksum(path: str | Path) -> str:
    """The tagged xxh3-128 of a file alone (one whose sha256 is known without reading it: a
    Hugging Face cache blob is named by it, checked when it was downloaded)."""
    fast = new_checksum()
    for block in _blocks(path):
        fast.update(block)
    return tagged(fast.hexdigest())


def _blocks(path: str | Path) -> Iterator[memoryview]:
    """The file's bytes, a block at a time, in one reused buffer (a block is valid until the
    next one comes): 256 KiB stays in the CPU's cache between the read and the hashing."""
    buf = memoryview(bytearray(_READ_BYTES))
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            yield buf[:n]
