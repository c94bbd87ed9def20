"""The Hub path end to end against a real HTTP server speaking the Hub's endpoints: inspect
before download, download with progress, cut and resume, cancel, and each bad id named."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from engine.config import ModelSpec
from engine.model import ModelError, inspect_model, load_model
from engine.model.cache import cached_snapshot, hub_cache_dir, list_cached_models
from engine.model.download import RETRIES, download_model
from engine.model.hub import DownloadCancelled, HubError, inspect_remote
from tests.model.conftest import STORIES

REPO = "orchard-test/stories"
WEIGHTS = "model.safetensors"


def _cache_files() -> list[str]:
    root = hub_cache_dir()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_inspect_before_download_reads_headers_only(hub):
    remote = inspect_remote(REPO)
    local = inspect_model(STORIES)
    assert remote.info.param_count == local.param_count
    assert remote.info.module_names == local.module_names
    assert (remote.info.model_type, remote.info.num_layers) == ("llama", 5)
    assert remote.repo.total_bytes == sum(p.stat().st_size for p in STORIES.iterdir() if p.name != "README.md" and p.name != "SHA256SUMS")  # fmt: skip
    assert remote.cached is None and "not downloaded" in remote.format_text()
    assert hub.gets(REPO, WEIGHTS) == ["bytes=0-100000"]  # the header, by range request
    assert _cache_files() == []  # nothing was written


def test_download_with_progress_then_load_by_id_offline(hub, monkeypatch):
    seen = []
    path = download_model(REPO, on_progress=seen.append)
    for name in ("config.json", WEIGHTS, "tokenizer.json"):
        assert (path / name).read_bytes() == (STORIES / name).read_bytes()
    assert seen[-1].finished and seen[-1].done_bytes == seen[-1].total_bytes
    assert [p.files_done for p in seen if not p.finished] == sorted(
        p.files_done for p in seen if not p.finished
    )
    [cached] = list_cached_models()
    assert (cached.repo_id, cached.complete, cached.architecture) == (
        REPO,
        True,
        "LlamaForCausalLM",
    )
    assert cached.size_bytes >= (STORIES / WEIGHTS).stat().st_size
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(hub.requests)
    loaded = load_model(ModelSpec(path=REPO))  # the id loads from the cache, no request
    assert loaded.path == path and len(hub.requests) == before


def test_cut_mid_file_resumes_with_a_range_request(hub):
    hub.cut(REPO, WEIGHTS, after=300_000)
    path = download_model(REPO)
    assert hub.gets(REPO, WEIGHTS) == ["", "bytes=300000-"]
    assert (path / WEIGHTS).read_bytes() == (STORIES / WEIGHTS).read_bytes()


def test_download_cut_for_good_keeps_the_part_and_resumes_next_time(hub):
    hub.cut(REPO, WEIGHTS, after=250_000, times=RETRIES + 1)
    with pytest.raises(
        HubError, match=r"cut at 250,000 of 1,044,977 bytes.*run the download again"
    ):
        download_model(REPO)
    assert cached_snapshot(REPO) is None  # not a usable model: no ref, no weights
    [entry] = list_cached_models()
    assert not entry.complete and entry.partial_bytes == 250_000
    path = download_model(REPO)
    assert hub.gets(REPO, WEIGHTS)[-1] == "bytes=250000-"
    assert (path / WEIGHTS).read_bytes() == (STORIES / WEIGHTS).read_bytes()


def test_cancel_keeps_the_partial_file_and_the_next_run_resumes(hub):
    hub.repos[REPO].files[WEIGHTS] = (STORIES / WEIGHTS).read_bytes() * 8  # 8 MB to cancel in
    hub.repos[REPO].commit = "c" * 40
    cancel = threading.Event()

    def on_progress(p):
        if p.file == WEIGHTS and p.file_bytes > 0:
            cancel.set()

    with pytest.raises(DownloadCancelled, match="cancelled in model.safetensors"):
        download_model(REPO, on_progress=on_progress, cancel=cancel)
    partial = list(hub_cache_dir().rglob("*.incomplete"))
    assert len(partial) == 1 and 0 < partial[0].stat().st_size < 8 * 1_044_977
    kept = partial[0].stat().st_size
    path = download_model(REPO)
    assert hub.gets(REPO, WEIGHTS)[-1] == f"bytes={kept}-"
    assert (path / WEIGHTS).read_bytes() == hub.repos[REPO].files[WEIGHTS]
    assert not list(hub_cache_dir().rglob("*.incomplete"))


@pytest.mark.parametrize(
    "repo_id, setup, message",
    [
        ("orchard-test/no-such-model", None, "no such model on the Hugging Face Hub"),
        ("orchard-test/gated", "gated", "is gated: accept its license"),
        ("orchard-test/odd", "unsupported", "'not_a_model' is not supported by mlx-lm"),
        ("orchard-test/damaged", "damaged", "the downloaded file is damaged"),
        (
            "orchard-test/bin-only",
            "bin",
            r"no model\*.safetensors weights \(it has pytorch_model.bin\)",
        ),
    ],
)
def test_bad_ids_are_named_and_change_nothing(hub, repo_id, setup, message):
    if setup:
        repo = hub.add_folder(repo_id, STORIES, gated=setup == "gated")
        if setup == "unsupported":
            repo.files["config.json"] = b'{"model_type": "not_a_model"}'
            repo.commit = "d" * 40
        if setup == "bin":
            repo.files["pytorch_model.bin"] = repo.files.pop(WEIGHTS)
            repo.commit = "b" * 40
        if setup == "damaged":
            good = repo.files[WEIGHTS]
            repo.served[WEIGHTS] = good[:-4] + b"oops"
    with pytest.raises(HubError, match=message):
        download_model(repo_id)
    with pytest.raises(ModelError, match=message):
        load_model(ModelSpec(path=repo_id))
    assert cached_snapshot(repo_id) is None
    if setup != "damaged":  # a damaged file is discarded; the good files stay for next time
        assert _cache_files() == []
    else:
        assert not list(hub_cache_dir().rglob("*.incomplete"))


def test_offline_says_what_is_cached(hub, monkeypatch):
    download_model(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        HubError, match=rf"offline mode \(HF_HUB_OFFLINE\).*Cached and ready: {REPO}"
    ):
        load_model(ModelSpec(path="orchard-test/other"))
    remote = inspect_remote(REPO)  # offline, a cached model is described from disk
    assert (
        remote.cached is not None and remote.info.param_count == inspect_model(STORIES).param_count
    )


def test_unreachable_hub_is_named(hub, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on port 9
    with pytest.raises(HubError, match="cannot be reached"):
        inspect_remote(REPO)
    assert _cache_files() == []


def test_a_local_path_never_touches_the_hub(hub, tmp_path):
    with pytest.raises(ModelError, match="no such model folder"):
        load_model(ModelSpec(path=str(tmp_path / "missing")))
    assert hub.requests == [] and Path(tmp_path / "missing").exists() is False
