"""What the coordinator ships to workers: dataset files, and model files for remote workers
(a local folder, or its own cached snapshot of a Hugging Face id), with progress events."""

import hashlib
import json
import time
from pathlib import Path

import pytest

from engine.config import JobSpec, resolve_model_path
from engine.lora.adapters import model_reference, restamp_config
from engine.runtime.shipped_files import ShipProgress, content_hash, files_to_ship
from engine.worker.files import sha256_file


def test_a_dataset_folder_ships_its_train_and_valid_files(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"text": "a"}\n')
    (tmp_path / "valid.jsonl").write_text('{"text": "b"}\n')
    job = JobSpec().with_overrides([f'data.path="{tmp_path}"'])
    files = files_to_ship(job, remote=False)
    assert files == {"dataset": tmp_path / "train.jsonl", "valid": tmp_path / "valid.jsonl"}


def test_remote_workers_also_get_a_local_model_folder(tmp_path):
    files = files_to_ship(JobSpec(), remote=True)
    assert files["model/config.json"].parent == files["model/tokenizer.json"].parent
    assert str(files["model/config.json"].parent) == resolve_model_path("demo")
    assert not any(r.startswith("model/") for r in files_to_ship(JobSpec(), remote=False))


def test_a_folder_without_a_train_file_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    job = JobSpec().with_overrides([f'data.path="{tmp_path}"'])
    with pytest.raises(ValueError, match="no train file"):
        files_to_ship(job, remote=False)


def test_a_hugging_face_id_ships_the_coordinators_snapshot(tmp_path):
    snap = tmp_path / "snap"
    snap.mkdir()
    for name in ("config.json", "model.safetensors"):
        (snap / name).write_bytes((Path(resolve_model_path("demo")) / name).read_bytes())
    job = JobSpec().with_overrides(['model.path="org/some-model"'])
    files = files_to_ship(job, remote=True, model_dir=snap)
    assert files["model/config.json"] == snap / "config.json"
    assert not any(r.startswith("model/") for r in files_to_ship(job, remote=False))


def test_content_hash_names_a_cache_blob_by_its_name_and_remembers_the_rest(tmp_path):
    data = b"weights" * 1000
    digest = hashlib.sha256(data).hexdigest()
    blob = tmp_path / "blobs" / digest
    blob.parent.mkdir()
    blob.write_bytes(data)
    link = tmp_path / "model.safetensors"
    link.symlink_to(blob)
    assert content_hash(link) == digest
    plain = tmp_path / "train.jsonl"
    plain.write_bytes(data)
    assert content_hash(plain) == digest == sha256_file(plain)


def test_the_wire_checksum_comes_from_the_sha256_pass_or_one_read_of_a_blob(tmp_path, monkeypatch):  # fmt: skip
    import xxhash

    from engine.runtime import shipped_files as cluster

    reads = []
    for name in ("file_digests", "file_checksum"):
        real = getattr(cluster, name)
        monkeypatch.setattr(cluster, name, lambda p, real=real, name=name: reads.append(name) or real(p))  # fmt: skip
    data = b"weights" * 1000
    want = f"xxh3-128:{xxhash.xxh3_128(data).hexdigest()}"
    blob = tmp_path / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir()
    blob.write_bytes(data)
    plain = tmp_path / "train.jsonl"
    plain.write_bytes(data)
    assert cluster.content_hash(blob) == blob.name and reads == []  # named by it: not read
    lazy = cluster.lazy_wire_checksum(blob)  # read only if a worker needs it before the bytes
    assert callable(lazy) and reads == []
    assert lazy() == want and reads == ["file_checksum"]
    assert cluster.lazy_wire_checksum(blob) == want and reads == ["file_checksum"]
    assert cluster.content_hash(plain) == blob.name and reads[-1] == "file_digests"
    assert cluster.wire_checksum(plain) == want and cluster.wire_checksum(blob) == want
    assert cluster.lazy_wire_checksum(plain) == want
    assert reads == ["file_checksum", "file_digests"]  # both remembered


def test_ship_progress_reports_each_file_and_the_end():
    events = []
    p = ShipProgress(events.append, "w:1", 1, [10, 20], held=5, every_s=0.0)
    p.emit(4, "a")
    p.file_done(10, "a")
    p.emit(20, "b")
    p.file_done(20, "b")
    p.emit(0, "", done=True)
    assert [(e.sent_bytes, e.files_sent, e.file) for e in events] == [(4, 0, "a"), (30, 1, "b"), (30, 2, "")]  # fmt: skip
    assert events[-1].done and events[-1].held_bytes == 5 and events[-1].total_bytes == 30


def test_adapter_metadata_names_what_mlx_lm_loads_and_the_users_paths(tmp_path):
    job = JobSpec().with_overrides(['data.path="my/data.jsonl"'])
    raw = json.dumps({"model": "/worker/jobs/x/model", "orchard": {"job": {"data": {"path": "/w/files/ab/c"}}}})  # fmt: skip
    config = json.loads(restamp_config(raw.encode(), job))
    assert config["model"] == str(Path(resolve_model_path("demo")).resolve())  # demo: the folder
    assert config["orchard"]["job"]["data"]["path"] == "my/data.jsonl"
    assert model_reference("mlx-community/Qwen2.5-0.5B-Instruct-4bit") == "mlx-community/Qwen2.5-0.5B-Instruct-4bit"  # fmt: skip
    assert model_reference(str(tmp_path / ".." / tmp_path.name)) == str(tmp_path.resolve())


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_one_download_shipped_to_workers_that_have_no_internet(tmp_path, monkeypatch):
    """A Hub id: the coordinator downloads it once (a fake Hub, a real HTTP server) and ships
    it to two workers reached as dist.hosts that are offline with an empty HF cache; a
    second run ships nothing. The runs train DoRA with gradient checkpointing on the workers."""
    from engine.events import DownloadEvent, ShipEvent
    from engine.rpc.auth import TOKEN_ENV, new_token
    from engine.runtime import start_run
    from engine.runtime.local_workers import start_local_worker, stop_local_workers
    from tests.model.hub_server import FakeHub
    from tests.runtime.helpers import tiny_job

    hub = FakeHub().start()
    hub.add_folder("orchard-test/stories", Path(resolve_model_path("demo")))
    token = new_token()
    for k, v in {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9",
                 "HF_HUB_CACHE": str(tmp_path / "worker-hf")}.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    workers = [start_local_worker(token, tmp_path / f"w{r}", tmp_path / f"w{r}.log", 2) for r in range(2)]  # fmt: skip
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "coordinator-hf"))
    monkeypatch.setenv(TOKEN_ENV, token)
    try:
        over = {"dist.hosts": [w.address for w in workers], "model.path": "orchard-test/stories",
                "run.grad_checkpoint": True, "lora.type": "dora"}  # fmt: skip
        runs = []
        for _ in range(2):
            events: list = []
            result = start_run(tiny_job(tmp_path, 2, **over), events.append,
                               data_dir=tmp_path / "unused").wait(300)  # fmt: skip
            assert result is not None and result.status == "finished", result
            runs.append((result, events))
        (first, ev1), (second, ev2) = runs
        assert [e for e in ev1 if isinstance(e, DownloadEvent)][-1].finished
        done1 = {e.worker: e for e in ev1 if isinstance(e, ShipEvent) and e.done}
        model_bytes = (Path(resolve_model_path("demo")) / "model.safetensors").stat().st_size
        assert sorted(done1) == sorted(w.address for w in workers)
        assert all(e.sent_bytes > model_bytes and e.files_sent >= 6 for e in done1.values())
        done2 = [e for e in ev2 if isinstance(e, ShipEvent) and e.done]
        assert len(done2) == 2 and all(e.sent_bytes == 0 and e.held_bytes > model_bytes for e in done2)  # fmt: skip
        assert not [e for e in ev2 if isinstance(e, DownloadEvent)]  # cached: no download
        assert not (tmp_path / "worker-hf").exists()  # no worker touched a Hugging Face cache
        config = json.loads((second.run_dir / "adapter" / "adapter_config.json").read_text())
        assert config["model"] == "orchard-test/stories"
        assert config["orchard"]["job"]["data"]["path"] == "demo"
        assert config["fine_tune_type"] == "dora"  # DoRA with checkpointing, on the workers
        import mlx_lm
        from mlx.utils import tree_flatten

        from engine.model.cache import cached_snapshot

        model, _ = mlx_lm.load(str(cached_snapshot("orchard-test/stories")),
                               adapter_path=str(second.run_dir / "adapter"))  # fmt: skip
        assert any(n.endswith(".m") for n, _ in tree_flatten(model.parameters()))
    finally:
        stop_local_workers(workers, grace_s=10)
        hub.stop()


def test_a_stop_while_shipping_ends_it_and_the_next_run_resumes(tmp_path, monkeypatch):
    """A Stop mid-file ends the shipping at the next progress report; the worker keeps the
    bytes it got, and the next run's bulk stream starts where they end."""
    import os
    import threading

    from engine.events import ShipEvent
    from engine.rpc import bulk, worker_client
    from engine.rpc.auth import TOKEN_ENV, new_token
    from engine.rpc.gen import orchard_pb2 as pb
    from engine.runtime.cluster import Cluster, ShipStopped
    from engine.runtime.local_workers import start_local_worker, stop_local_workers

    mib = 1024 * 1024
    token = new_token()
    monkeypatch.setenv(TOKEN_ENV, token)
    monkeypatch.setattr(bulk, "SEGMENT_BYTES", mib)  # a progress report (and a Stop check) a MiB
    offsets: list[tuple[str, int]] = []
    real = worker_client.send_file
    monkeypatch.setattr(worker_client, "send_file", lambda h, p, t, path, off, *a, **k: (
        offsets.append((Path(path).name, off)) or real(h, p, t, path, off, *a, **k)))  # fmt: skip
    data = tmp_path / "train.jsonl"
    data.write_bytes(os.urandom(24 * mib))  # never parsed: shipping only moves bytes
    digest = sha256_file(data)
    worker = start_local_worker(token, tmp_path / "w", tmp_path / "w.log", 2)
    stop, stopped_once = threading.Event(), []

    def sink(e) -> None:  # the user presses Stop once the first bytes are on their way
        if isinstance(e, ShipEvent) and e.sent_bytes and not stopped_once:
            stopped_once.append(e)
            stop.set()

    job = JobSpec().with_overrides([f'data.path="{data}"', f'dist.hosts=["{worker.address}"]'])
    cluster = Cluster(job, tmp_path / "run", sink=sink, cancel=stop)
    try:
        cluster.start()
        with pytest.raises(ShipStopped, match="next run resumes"):
            cluster.ship_files()
        c = cluster.clients[0]
        req = pb.OpenFileRequest(sha256=digest, name="train.jsonl", size=24 * mib)

        def held_now() -> int:
            return c._stub.OpenFile(req, metadata=c._metadata(), timeout=10).offset

        # The worker writes what reached it after the coordinator stopped sending: asked at
        # once, it may not have written the first byte yet (seen: held 0 under load).
        deadline = time.monotonic() + 10
        while (held := held_now()) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 0 < held < 24 * mib and not c.has_file(digest)
        stop.clear()
        assert cluster.ship_files()["dataset"] == digest
        assert c.has_file(digest)
        resumed = [off for name, off in offsets if name == "train.jsonl"][1:]
        assert resumed and resumed[-1] > 0, offsets
    finally:
        cluster.stop("test over")
        stop_local_workers([worker], grace_s=5)
