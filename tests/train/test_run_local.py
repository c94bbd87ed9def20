"""run_local / resume_local on the bundled model and dataset (real parts end to end)."""

import threading

import mlx.core as mx
import pytest
from mlx_lm import load as mlx_lm_load

from engine.config import JobSpec
from engine.events import ProgressEvent, StateEvent
from engine.train import read_metrics, resume_local, run_local


def _job(tmp_path, steps=6):
    job = JobSpec()
    job.lora.rank = 4
    job.lora.dropout = 0.1
    job.data.max_seq_len = 64
    job.run.steps = steps
    job.run.batch_size = 4
    job.run.val_every = 3
    job.run.val_batches = 2
    job.run.checkpoint_every = 2
    job.run.out_dir = str(tmp_path)
    job.run.name = "demo"
    return job


def test_run_local_writes_the_run_folder_and_an_adapter_mlx_lm_loads(tmp_path):
    events = []
    result = run_local(_job(tmp_path), events.append, threading.Event())
    assert result.state == "finished", result.message
    run = tmp_path / "demo"
    for name in ("job.toml", "metrics.jsonl", "log.txt", "checkpoints/latest"):
        assert (run / name).exists(), name
    assert "LoRA" in (run / "log.txt").read_text() or "trainable" in (run / "log.txt").read_text()
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows if r["kind"] == "train"] == list(range(1, 7))
    assert [r["step"] for r in rows if r["kind"] == "val"] == [3, 6]
    states = [e.state for e in events if isinstance(e, StateEvent)]
    assert states[0] == "preparing" and states[-1] == "finished"
    model, _ = mlx_lm_load(_demo(), adapter_path=str(result.adapter_dir))
    out = model(mx.array([[1, 2, 3]]))
    assert out.shape[-1] == 512


def _demo():
    from engine.config import resolve_model_path

    return resolve_model_path("demo")


def test_stop_then_resume_local_finishes_the_same_run(tmp_path):
    stop = threading.Event()

    def sink(e):
        if isinstance(e, ProgressEvent) and e.step == 3:
            stop.set()

    first = run_local(_job(tmp_path), sink, stop)
    assert first.state == "stopped" and first.step == 3
    second = resume_local(tmp_path / "demo", None, threading.Event())
    assert second.state == "finished" and second.step == 6
    rows = read_metrics(tmp_path / "demo" / "metrics.jsonl")
    assert [r["step"] for r in rows if r["kind"] == "train"] == list(range(1, 7))


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda j: setattr(j.data, "path", "/nonexistent/data.jsonl"), "data.jsonl"),
        (lambda j: setattr(j.model, "path", "/nonexistent/model"), "nonexistent"),
        (lambda j: setattr(j.lora, "target_modules", ["nope_proj"]), "nope_proj"),
    ],
)
def test_bad_input_fails_with_a_message(tmp_path, change, needle):
    job = _job(tmp_path)
    change(job)
    events = []
    result = run_local(job, events.append)
    assert result.state == "failed" and needle in result.message
    assert "internal error" not in result.message
    assert any(isinstance(e, StateEvent) and e.state == "failed" for e in events)


def test_resume_without_a_run_folder_fails_cleanly(tmp_path):
    result = resume_local(tmp_path / "missing")
    assert result.state == "failed" and "job.toml" in result.message
