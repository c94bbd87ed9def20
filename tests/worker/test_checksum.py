"""The wire checksum and the files kept on a caller's word: checked, refused, resumed, scoped."""

import hashlib

import pytest
import xxhash

from engine.worker.checksum import file_checksum, file_digests, parse_checksum, tagged
from engine.worker.errors import InvalidRequest
from engine.worker.files import FileStore

DATA = bytes(range(256)) * 4000  # 1 MB: several of the digests' read blocks
SHA = hashlib.sha256(DATA).hexdigest()
FAST = xxhash.xxh3_128(DATA).hexdigest()


def _send(store: FileStore, data: bytes, checksum: str, caller: str, offset: int = 0):
    incoming = store.begin(SHA, "model.safetensors", offset, len(DATA), checksum, caller)
    try:
        incoming.write(data[offset:])
        return incoming.finish()
    finally:
        incoming.close(keep=True)  # a refusal already deleted its bytes; finish published


def test_one_read_gives_the_sha256_and_the_checksum(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(DATA)
    assert file_digests(path) == (SHA, f"xxh3-128:{FAST}") and file_checksum(path) == tagged(FAST)
    assert parse_checksum(f"xxh3-128:{FAST}") == FAST and parse_checksum("") is None
    assert parse_checksum(f"blake3:{'0' * 64}") is None  # an algorithm to come: sha256 checks it
    with pytest.raises(InvalidRequest, match="32 lowercase hex"):
        parse_checksum("xxh3-128:XYZ")


def test_a_file_kept_on_a_callers_word_is_held_for_that_caller_alone(tmp_path):
    store = FileStore(tmp_path / "w")
    assert _send(store, DATA, FAST, "laptop") == (SHA, len(DATA))
    assert store.path_of(SHA, "laptop").read_bytes() == DATA
    assert not store.has(SHA, "desktop") and not store.has(SHA)  # another caller ships its own
    job = store.materialize({"model/model.safetensors": SHA}, tmp_path / "job", "laptop")
    assert job["model/model.safetensors"].read_bytes() == DATA
    with pytest.raises(InvalidRequest, match="never sent"):
        store.materialize({"dataset": SHA}, tmp_path / "job2", "desktop")
    # a copy whose sha256 the worker checked itself (PutFile) is every caller's
    incoming = store.begin(SHA, "model.safetensors", 0, len(DATA))
    incoming.write(DATA)
    incoming.finish()
    assert store.has(SHA, "desktop") and store.has(SHA)


def test_bytes_that_miss_the_checksum_are_refused_and_nothing_is_kept(tmp_path):
    store = FileStore(tmp_path)
    bad = DATA[:-1] + b"\x00"
    with pytest.raises(InvalidRequest, match="xxh3-128 mismatch"):
        _send(store, bad, FAST, "")
    assert store.held(SHA) == 0 and not [p for p in store.files.rglob("*") if p.is_file()]


def test_a_resume_checks_the_kept_bytes_too(tmp_path):
    store = FileStore(tmp_path)
    other = b"\xff" * 1000 + DATA[1000:]  # a kept prefix that is not this file's
    first = store.begin(SHA, "model.safetensors", 0, len(DATA), FAST, "")
    first.write(other[:1000])
    first.close(keep=True)  # the stream broke
    assert store.held(SHA) == 1000
    with pytest.raises(InvalidRequest, match="xxh3-128 mismatch"):
        _send(store, DATA, FAST, "", offset=1000)
    assert store.held(SHA) == 0 and not store.has(SHA)
    first = store.begin(SHA, "model.safetensors", 0, len(DATA), FAST, "")
    first.write(DATA[:4096])
    first.close(keep=True)
    assert _send(store, DATA, FAST, "", offset=4096) == (SHA, len(DATA))
    assert store.path_of(SHA).read_bytes() == DATA
