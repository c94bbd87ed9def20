"""engine.preflight: what refuses a run before any worker starts, and what it offers instead.

Real model folders, real datasets and the real estimate; only a machine's memory is given
(``local_memory``/``host_memory``) so a small Mac can be played on any test machine.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import time
from pathlib import Path

import pytest

from engine.config import JobSpec
from engine.model.hub import TIMEOUT_S
from engine.preflight import Suggestion, gib, preflight
from engine.runtime.demo import demo_job
from tests.model.conftest import STORIES, build, save_folder, tiny_config

GIB = 2**30


def _demo(tmp_path: Path, *sets: str, workers: int = 2) -> JobSpec:
    return demo_job(10, tmp_path / "runs", workers, "all-reduce", list(sets))


def test_the_reproduction_batch_10000_is_refused_with_accumulation_that_fits(tmp_path):
    """Issue 11: batch 10000 on the demo was 'won't fit: 2 x 365 GiB', yet Start ran."""
    job = _demo(tmp_path, "run.batch_size=10000")
    result = preflight(job, local_memory=24 * GIB)
    assert not result.ok
    (memory,) = result.refusals
    assert memory.kind == "memory"
    assert "won't fit on this machine (24.0 GiB): 2 workers ×" in memory.message
    assert "a micro-batch of 5000 sequences" in memory.message
    first = result.suggestions[0]
    assert set(first.overrides) == {"run.grad_accum"}
    assert "the same global batch of 10000" in first.title
    fixed = first.apply(job)
    assert (
        fixed.run.batch_size == 10000 and fixed.run.grad_accum == first.overrides["run.grad_accum"]
    )
    assert job.run.grad_accum == 1  # apply() copies
    again = preflight(fixed, local_memory=24 * GIB)
    assert again.ok, again.message()
    assert all(f.level == "fits" for f in again.fits)
    # the least accumulation that fits: one step less would not
    less = Suggestion("", {"run.grad_accum": fixed.run.grad_accum - 1}, "", 0).apply(job)
    assert not all(f.level == "fits" for f in preflight(less, local_memory=24 * GIB).fits)
    text = result.message(cli=True)
    assert f"--set run.grad_accum={fixed.run.grad_accum}" in text


def test_the_demo_as_shipped_passes_with_its_estimate(tmp_path):
    result = preflight(_demo(tmp_path), local_memory=24 * GIB)
    assert result.ok, result.message()
    assert result.train_items > 0 and result.estimate.total_bytes > 0
    assert [f.machine.processes for f in result.fits] == [2]


def test_a_mac_that_cannot_hold_one_sequence_is_refused_by_name(tmp_path):
    job = _demo(
        tmp_path, "run.batch_size=2", 'dist.hosts=["mini.local:50051", "studio.local:50051"]'
    )
    result = preflight(job, host_memory={"mini.local:50051": 2**24, "studio.local:50051": 64 * GIB})
    (memory,) = result.refusals
    assert "mini.local:50051 (0.02 GiB) cannot fit even one sequence" in memory.message
    assert "studio" not in memory.message
    leave_out = result.suggestions[0]  # then fewer layers, which fit even the small Mac
    assert leave_out.overrides == {"dist.hosts": ["studio.local:50051"]}
    assert leave_out.title == "Leave out mini.local:50051"
    assert preflight(leave_out.apply(job), host_memory={"studio.local:50051": 64 * GIB}).ok
    assert """--set 'dist.hosts=["studio.local:50051"]'""" in result.message(cli=True)


def test_a_host_whose_memory_is_unknown_is_asked_and_else_noted(tmp_path):
    job = _demo(tmp_path, 'dist.hosts=["a:1", "b:2"]')

    def describe(host: str) -> int:
        if host == "b:2":
            raise ConnectionError("no route to host")
        return 16 * GIB

    result = preflight(job, describe=describe)
    assert result.ok
    assert [f.machine.memory_bytes for f in result.fits] == [16 * GIB, 0]
    assert any("b:2: memory unknown (no route to host)" in n for n in result.notes)


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory) -> Path:
    """Base weights dominate: hidden 512, 4 layers (~42 MB in fp32)."""
    config = tiny_config(hidden_size=512, intermediate_size=1024, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=8)  # fmt: skip
    return save_folder(build(config), config, tmp_path_factory.mktemp("wide"))


def test_qlora_and_fewer_workers_are_offered_when_the_base_weights_do_not_fit(tmp_path, wide_model):
    job = _demo(tmp_path, f'model.path="{wide_model}"', "run.batch_size=2", "data.max_seq_len=64")
    need = preflight(job, local_memory=64 * GIB).fits[0].need_bytes  # two workers' worth
    result = preflight(job, local_memory=int(need / 1.3))
    assert [r.kind for r in result.refusals] == ["memory"]
    kinds = [set(s.overrides) for s in result.suggestions]
    assert {"dist.workers"} in kinds and {"model.quantize"} in kinds
    for s in result.suggestions:  # every offer fits by the same estimate
        fixed = preflight(s.apply(job), local_memory=int(need / 1.3))
        assert fixed.ok and all(f.level == "fits" for f in fixed.fits), s.title
    quantize = next(s for s in result.suggestions if "model.quantize" in s.overrides)
    assert quantize.title == "QLoRA: quantize the base model to 4 bits"


def test_qlora_is_neither_offered_nor_accepted_where_a_target_cannot_quantize(tmp_path):
    config = tiny_config(hidden_size=512, intermediate_size=1000, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=8)  # fmt: skip
    folder = save_folder(build(config), config, tmp_path / "odd")  # down_proj's input: 1000
    job = _demo(tmp_path, f'model.path="{folder}"', "run.batch_size=2", "data.max_seq_len=64")
    need = preflight(job, local_memory=64 * GIB).fits[0].need_bytes
    result = preflight(job, local_memory=int(need / 1.3))
    kinds = [set(s.overrides) for s in result.suggestions]
    assert {"dist.workers"} in kinds and not any("model.quantize" in k for k in kinds)
    (settings,) = preflight(_demo(tmp_path, f'model.path="{folder}"', "model.quantize=true"),
                            local_memory=64 * GIB).refusals  # fmt: skip
    assert settings.kind == "settings"
    assert "model.group_size: 64 does not divide the input width 1000 of mlp.down_proj" in settings.message  # fmt: skip


def test_fewer_layers_are_offered_when_long_sequences_are_the_cost(tmp_path):
    words = " ".join(f"Pip counted apple number {i} in the orchard." for i in range(400))
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps({"text": words}) + "\n" for _ in range(4)))
    job = _demo(tmp_path, f'data.path="{data}"', "data.max_seq_len=2048", "run.batch_size=1",
                "data.valid_fraction=0.0", workers=1)  # fmt: skip
    result = preflight(job, local_memory=GIB)
    assert not result.ok
    (layers,) = [s for s in result.suggestions if "lora.layers" in s.overrides]
    top = layers.overrides["lora.layers"]
    assert top == list(range(5 - len(top), 5)) and 0 < len(top) < 5  # the top layers
    assert preflight(layers.apply(job), local_memory=GIB).ok
    one_more = list(range(4 - len(top), 5))  # and not one layer more
    bigger = Suggestion("", {"lora.layers": one_more}, "", 0).apply(job)
    assert not all(f.level == "fits" for f in preflight(bigger, local_memory=GIB).fits)


def test_dataset_errors_are_named_by_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    good = json.dumps({"instruction": "Hi", "output": "Hello"})
    bad.write_text(f"{good}\n{{not json\n{json.dumps({'instruction': 3})}\n{good}\n")
    result = preflight(_demo(tmp_path, f'data.path="{bad}"'), local_memory=24 * GIB)
    (dataset,) = result.refusals
    assert dataset.kind == "dataset"
    assert f"3 errors in {bad}" in dataset.message  # line 3 has two
    assert f"{bad}:2" in dataset.message and f"{bad}:3" in dataset.message
    assert result.suggestions == [] and result.fits == []  # no memory verdict on a broken run


@pytest.mark.parametrize(
    "fault", ["no config", "bad json", "unsupported", "no weights", "no tokenizer"]
)
def test_a_model_that_cannot_load_is_named(tmp_path, fault):
    folder = tmp_path / "model"
    shutil.copytree(STORIES, folder)
    config = folder / "config.json"
    if fault == "no config":
        config.unlink()
    elif fault == "bad json":
        config.write_text('{"model_type": "llama",\n  oops}')
    elif fault == "unsupported":
        config.write_text(json.dumps({**json.loads(config.read_text()), "model_type": "nosuch"}))
    elif fault == "no weights":
        for f in folder.glob("*.safetensors"):
            f.unlink()
    else:
        for f in folder.glob("tokenizer*"):
            f.unlink()
    result = preflight(_demo(tmp_path, f'model.path="{folder}"'), local_memory=24 * GIB)
    (model,) = result.refusals
    assert model.kind == "model"
    assert str(folder) in model.message
    expected = {"no config": "no config.json", "bad json": "config.json:2", "unsupported":
                "'nosuch' is not supported", "no weights": "no weights",
                "no tokenizer": "cannot load the tokenizer"}[fault]  # fmt: skip
    assert expected in model.message


def test_settings_the_model_lacks_are_refused(tmp_path):
    job = _demo(tmp_path, 'lora.target_modules=["q_proj", "qkv"]', "lora.layers=[9]")
    messages = [r.message for r in preflight(job, local_memory=24 * GIB).refusals]
    assert any("lora.target_modules: 'qkv' is not a linear module" in m for m in messages)
    assert any("lora.layers: [9] out of range; this model has layers 0..4" in m for m in messages)
    job.lora.rank = 0  # what a JobSpec refuses is refused first, by its field
    (settings,) = preflight(job, local_memory=24 * GIB).refusals
    assert "lora.rank: expected a value in [1, 1024], got 0" in settings.message


# ---- a Hugging Face id not downloaded yet: sized from the Hub, before any download ----------
@pytest.fixture
def hub(tmp_path, monkeypatch, wide_model):
    """The real HTTP server that plays the Hub (tests/model/hub_server.py), serving the wide
    model and stories260K, with HF_ENDPOINT pointed at it and an empty cache."""
    from tests.model.hub_server import FakeHub

    server = FakeHub().start()
    server.add_folder("orchard-test/wide", wide_model)
    server.add_folder("orchard-test/stories", STORIES)
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    yield server
    server.stop()


def _cache_is_empty(tmp_path: Path) -> bool:
    cache = tmp_path / "hf-cache"
    return not cache.exists() or not any(p.is_file() for p in cache.rglob("*"))


def test_a_hub_id_that_would_not_fit_is_refused_before_any_download(tmp_path, hub, wide_model):
    sets = ("run.batch_size=2", "data.max_seq_len=64", "data.packing=true")
    local = preflight(_demo(tmp_path, f'model.path="{wide_model}"', *sets), local_memory=64 * GIB)
    job = _demo(tmp_path, 'model.path="orchard-test/wide"', *sets)
    sized = preflight(job, local_memory=64 * GIB)
    assert sized.ok, sized.message()
    # the Hub's config.json and headers give the estimate the downloaded folder gives
    assert sized.estimate.total_bytes == local.estimate.total_bytes
    assert any("not downloaded yet: checked from its config.json" in n for n in sized.notes)
    need = sized.fits[0].need_bytes
    result = preflight(job, local_memory=int(need / 1.3))
    assert [r.kind for r in result.refusals] == ["memory"]
    assert result.refusals[0].message.startswith(f"this machine ({gib(int(need / 1.3))})")
    (qlora,) = [s for s in result.suggestions if set(s.overrides) == {"model.quantize"}]
    assert preflight(qlora.apply(job), local_memory=int(need / 1.3)).ok
    assert hub.gets("orchard-test/wide", "model.safetensors") == ["bytes=0-100000"] * 3
    assert _cache_is_empty(tmp_path)  # nothing downloaded, nothing written


@pytest.mark.parametrize(
    "repo_id, fault, message",
    [
        ("orchard-test/no-such-model", None, "'orchard-test/no-such-model': no such model"),
        ("orchard-test/gated", "gated", "'orchard-test/gated' is gated: accept its license"),
        ("orchard-test/odd", "unsupported", "config.json: model_type: 'not_a_model' is not supp"),
        ("orchard-test/bin-only", "bin", r"no model\*.safetensors weights"),
    ],
)
def test_a_missing_gated_or_unusable_hub_id_is_refused_by_name(tmp_path, hub, repo_id, fault, message):  # fmt: skip
    if fault:
        repo = hub.add_folder(repo_id, STORIES, gated=fault == "gated")
        if fault == "unsupported":
            repo.files["config.json"] = json.dumps({**json.loads(repo.files["config.json"]), "model_type": "not_a_model"}).encode()  # fmt: skip
            repo.commit = "d" * 40
        if fault == "bin":
            repo.files["pytorch_model.bin"] = repo.files.pop("model.safetensors")
            repo.commit = "b" * 40
    result = preflight(_demo(tmp_path, f'model.path="{repo_id}"'), local_memory=24 * GIB)
    (model,) = result.refusals
    assert model.kind == "model"
    assert re.search(message, model.message), model.message
    assert result.fits == [] and _cache_is_empty(tmp_path)


def test_an_unreachable_or_offline_hub_is_a_note_not_a_refusal(tmp_path, hub, monkeypatch):
    job = _demo(tmp_path, 'model.path="orchard-test/wide"')
    with socket.socket() as silent:  # accepts connections, never answers: a hung network
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        start = time.monotonic()
        result = preflight(job, local_memory=24 * GIB, hub_timeout_s=0.5)
        waited = time.monotonic() - start
    assert result.ok and result.fits == [], result.message()
    (note,) = result.notes
    assert "the run's memory could not be checked" in note and "cannot be reached" in note
    assert waited < TIMEOUT_S  # the preflight's short timeout, not the Hub client's 20 s
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = preflight(job, local_memory=24 * GIB)
    assert result.ok and "offline mode (HF_HUB_OFFLINE)" in result.notes[0]
    assert hub.requests == [] and _cache_is_empty(tmp_path)
