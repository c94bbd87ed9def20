"""FileStore: chunked receive, sha256 check, refusal of paths, job layout."""

import hashlib

import pytest

from engine.worker.errors import InvalidRequest
from engine.worker.files import FileStore, Piece, check_name


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
