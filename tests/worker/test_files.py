"""FileStore: chunked receive, sha256 check, refusal of paths, resume, limits, job layout."""

import hashlib
import os
import threading
import time

import pytest

from engine.worker.errors import InvalidRequest
from engine.worker.files import MAX_FILE_BYTES, FileStore, Piece, check_name
from engine.worker.incoming import Superseded


def pieces(data: bytes, name: str, size: int = 7, digest: str | None = None):
    digest = digest or hashlib.sha256(data).hexdigest()
    offs = list(range(0, len(data), size)) or [0]
    return [Piece(digest, name, o, data[o : o + size], o == offs[-1]) for o in offs]


def test_receive_verifies_and_caches_by_hash(tmp_path):
    store = FileStore(tmp_path)
    data = b"line one\nline two\n" * 10
    digest, size = store.receive(pieces(data, "train.jsonl"))
    assert size == len(data) and digest == hashlib.sha256(data).hexdigest()
    assert store.path_of(digest).read_bytes() == data
    assert store.path_of(digest).name == "train.jsonl"
    assert store.has(digest) and not store.has("0" * 64)


def test_wrong_hash_is_refused_and_leaves_nothing(tmp_path):
    store = FileStore(tmp_path)
    with pytest.raises(InvalidRequest, match="sha256 mismatch"):
        store.receive(pieces(b"abc", "x.txt", digest="1" * 64))
    assert not store.has("1" * 64)
    assert [p.name for p in store.files.iterdir()] == []


@pytest.mark.parametrize("name", ["../evil", "a/b", "/etc/passwd", "..", ".", "", "a\\b"])
def test_paths_are_refused(tmp_path, name):
    with pytest.raises(InvalidRequest, match="plain file name"):
        check_name(name)
    with pytest.raises(InvalidRequest):
        FileStore(tmp_path).receive(pieces(b"abc", name))


def test_out_of_order_chunks_are_refused(tmp_path):
    ps = pieces(b"0123456789abcdef", "f.bin", size=4)
    with pytest.raises(InvalidRequest, match="offset"):
        FileStore(tmp_path).receive([ps[0], ps[2], ps[1], ps[3]])


def test_materialize_lays_out_model_and_refuses_unknown_roles(tmp_path):
    store = FileStore(tmp_path / "cache")
    d1, _ = store.receive(pieces(b"{}", "config.json"))
    d2, _ = store.receive(pieces(b"data", "train.jsonl"))
    out = store.materialize({"model/config.json": d1, "dataset": d2}, tmp_path / "job")
    assert out["model/config.json"] == tmp_path / "job" / "model" / "config.json"
    assert out["model/config.json"].read_bytes() == b"{}"
    assert out["dataset"].read_bytes() == b"data"
    with pytest.raises(InvalidRequest, match="role"):
        store.materialize({"weights": d1}, tmp_path / "job")
    with pytest.raises(InvalidRequest, match="plain file name"):
        store.materialize({"model/../x": d1}, tmp_path / "job")
    with pytest.raises(InvalidRequest, match="never sent"):
        store.materialize({"dataset": "2" * 64}, tmp_path / "job")


def test_a_broken_stream_keeps_its_bytes_and_the_next_one_resumes(tmp_path):
    store = FileStore(tmp_path)
    data = bytes(range(256)) * 40
    ps = pieces(data, "model.bin", size=1000)
    with pytest.raises(InvalidRequest, match="ended at byte 3000 before its last chunk"):
        store.receive(ps[:3])
    assert store.held(ps[0].sha256) == 3000 and not store.has(ps[0].sha256)
    with pytest.raises(InvalidRequest, match="expected 3000 or less"):  # no gap can open
        store.receive(ps[4:])
    digest, size = store.receive(ps[3:])  # the hash covers the kept bytes, re-read from disk
    assert (digest, size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert store.path_of(digest).read_bytes() == data
    assert store.held(digest) == 0 and not store.partials.exists()


def test_a_resume_with_other_bytes_fails_the_hash_and_keeps_nothing(tmp_path):
    store = FileStore(tmp_path)
    data = b"a" * 5000
    ps = pieces(data, "x.bin", size=1000)
    with pytest.raises(InvalidRequest):
        store.receive(ps[:2])
    bad = [Piece(p.sha256, p.name, p.offset, b"b" * len(p.data), p.last) for p in ps[2:]]
    with pytest.raises(InvalidRequest, match="sha256 mismatch"):
        store.receive(bad)
    assert store.held(ps[0].sha256) == 0 and not store.has(ps[0].sha256)
    assert not [p for p in store.files.rglob("*") if p.is_file()]


def test_an_announced_size_is_a_hard_limit(tmp_path):
    store = FileStore(tmp_path)
    incoming = store.begin("1" * 64, "w.bin", size=10)
    incoming.write(b"0123456789")
    with pytest.raises(InvalidRequest, match="more than the 10 bytes"):
        incoming.write(b"x")
    incoming.close(keep=False)
    with pytest.raises(InvalidRequest, match="size"):
        store.begin("1" * 64, "w.bin", size=MAX_FILE_BYTES + 1)
    with pytest.raises(InvalidRequest, match="plain file name"):
        store.begin("1" * 64, "../w.bin", size=10)
    assert not [p for p in store.files.rglob("*") if p.is_file()]


def test_a_newer_transfer_of_a_file_takes_over_from_a_stuck_one(tmp_path):
    store = FileStore(tmp_path)
    data = b"z" * 3000
    digest = hashlib.sha256(data).hexdigest()
    stuck = store.begin(digest, "f.bin", size=len(data))
    stuck.write(data[:1000])
    cancelled = threading.Event()
    stuck.on_cancel(cancelled.set)  # a bulk receiver shuts its socket here
    newer: list = []
    t = threading.Thread(target=lambda: newer.append(store.begin(digest, "f.bin", 1000, len(data))))
    t.start()
    assert cancelled.wait(5)
    with pytest.raises(Superseded):
        stuck.write(data[1000:2000])
    stuck.close(keep=True)  # what a broken stream does
    t.join(5)
    newer[0].write(data[1000:])
    assert newer[0].finish() == (digest, len(data))
    assert store.path_of(digest).read_bytes() == data


def test_partials_nobody_resumed_for_a_day_are_dropped(tmp_path):
    store = FileStore(tmp_path)
    store.partials.mkdir()
    old, new = store.partials / f"{'a' * 64}.part", store.partials / f"{'b' * 64}.part"
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    FileStore(tmp_path)
    assert not old.exists() and new.exists()


def test_two_processes_sharing_a_cache_receive_the_same_file_at_once(tmp_path):
    """Local workers share one cache folder and are sent the same file at the same time: two
    stores on one folder (each lock is an open file, as in two processes) interleave their
    chunks, both succeed and the file is whole; bytes the other one is writing are not offered
    for a resume."""

    a, b = FileStore(tmp_path), FileStore(tmp_path)
    data = bytes(range(256)) * 40
    ps = pieces(data, "train.jsonl", size=1000)
    first = a.begin(ps[0].sha256, "train.jsonl")
    second = b.begin(ps[0].sha256, "train.jsonl")  # the shared partial is first's
    assert second.partial != first.partial
    for p in ps:
        first.write(p.data)
        second.write(p.data)
    assert first.finish() == second.finish() == (hashlib.sha256(data).hexdigest(), len(data))
    assert a.path_of(ps[0].sha256).read_bytes() == data
    assert [p.name for p in a.partials.glob("*")] == []  # no partial left behind
    held = a.begin(ps[0].sha256, "train.jsonl")  # a new transfer holds the shared partial
    held.write(ps[0].data)
    assert a.held(ps[0].sha256) == 1000 and b.held(ps[0].sha256) == 0
    with pytest.raises(InvalidRequest, match="expected 0 or less"):
        b.begin(ps[0].sha256, "train.jsonl", offset=1000)
    held.close(keep=False)
