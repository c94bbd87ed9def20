"""`orchard demo` on local workers: a run folder with everything a run folder holds."""

import json

import mlx_lm
import pytest
from mlx.utils import tree_flatten

from engine.config import resolve_model_path
from engine.events import MetricEvent, StateEvent
from engine.runtime.demo import run_demo

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
def test_demo_on_two_local_workers_writes_a_complete_run_folder(tmp_path):
    events = []
    result = run_demo(steps=6, out_dir=tmp_path, workers=2, mode="ring", sink=events.append,
                      overrides=["run.batch_size=4", "data.max_seq_len=64", "run.val_every=3"])  # fmt: skip
    assert result.status == "finished", result.message
    run = result.run_dir
    for name in ("job.toml", "metrics.jsonl", "log.txt", "checkpoints/latest",
                 "adapter/adapters.safetensors", "adapter/adapter_config.json"):  # fmt: skip
        assert (run / name).is_file(), name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == list(range(1, 7))
    assert sorted({r["worker"] for r in rows if r["kind"] == "worker"}) == [0, 1]
    assert [r["step"] for r in rows if r["kind"] == "val"] == [3, 6]
    assert all(0.0 <= r["comm_share"] <= 1.0 for r in rows if r["kind"] == "train")
    assert all(0.0 <= r["comm_hidden_share"] <= 1.0 for r in rows if r["kind"] == "train")
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert config["fine_tune_type"] == "lora"
    model, _ = mlx_lm.load(resolve_model_path("demo"), adapter_path=str(run / "adapter"))
    assert any("lora_a" in name for name, _ in tree_flatten(model.parameters()))
    states = [e.state for e in events if isinstance(e, StateEvent)]
    assert states[0] == "preparing" and "running" in states and states[-1] == "finished"
    assert any(isinstance(e, MetricEvent) and e.kind == "worker" for e in events)
