"""The Hugging Face Hub before any weight is downloaded: a repo's files, config and tensor shapes.

``inspect_remote(id)`` reads the repo's file list, its config.json and the header of each
safetensors file (HTTP range requests, through huggingface_hub's own ``HfApi``), so the app
shows a model's size, architecture and LoRA targets before the user commits gigabytes.
Nothing is written to the cache. Every Hub failure becomes a ``HubError`` whose message
names the id and what to do (no such model, gated, offline, unreachable).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from engine.model.cache import cached_snapshot, hub_offline, human_bytes, list_cached_models
from engine.model.errors import ModelError
from engine.model.inspect import ModelInfo, describe_model, is_supported, mlx_model_type
from engine.model.safetensors_header import TensorHeader

log = logging.getLogger(__name__)

TIMEOUT_S = 20.0  # huggingface_hub's shared client has no timeout of its own


class HubError(ModelError):
    """The Hub could not give this model; the message says which id and why."""


class HubUnreachable(HubError):
    """The Hub could not be asked (offline mode, no network, a timeout, a server fault): this
    says nothing about the id itself."""


class DownloadCancelled(HubError):
    """The user cancelled; finished files stay in the cache and the partial one resumes."""


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int
    etag: str  # sha256 of the content for LFS files (what the cache names the blob), else git sha1
    lfs: bool


@dataclass(frozen=True)
class RemoteRepo:
    repo_id: str
    revision: str  # what was asked for ("main" by default)
    commit: str  # what it resolved to
    files: tuple[RemoteFile, ...]  # the files a download fetches
    gated: str  # "" or the Hub's gating mode ("auto", "manual")

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class RemoteModel:
    repo: RemoteRepo
    info: ModelInfo
    cached: Path | None  # the complete snapshot already on disk, if any

    def format_text(self) -> str:
        state = f"in the cache ({self.cached})" if self.cached else "not downloaded"
        lines = [
            f"download    {human_bytes(self.repo.total_bytes)} in {len(self.repo.files)} files; {state}",
            f"commit      {self.repo.commit}",
        ]
        if self.repo.gated:
            lines.append(
                f"gated       yes ({self.repo.gated}): needs an accepted license and a token"
            )
        return self.info.format_text() + "\n" + "\n".join(lines)


def endpoint() -> str:
    """HF_ENDPOINT read now (tests and mirrors point it elsewhere), else huggingface.co."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def allow_patterns() -> list[str]:
    """mlx-lm's own download patterns: Orchard fetches exactly what mlx_lm.load would."""
    from mlx_lm.utils import DEFAULT_ALLOW_PATTERNS

    return list(DEFAULT_ALLOW_PATTERNS)


def wanted(name: str) -> bool:
    """A repo file mlx-lm would download (top level only: workers keep plain file names)."""
    return "/" not in name and any(fnmatch(name, p) for p in allow_patterns())


def check_repo_id(repo_id: str) -> str:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise HubError(f"{repo_id!r}: not a valid Hugging Face id ({e})") from None
    if repo_id.count("/") != 1:
        raise HubError(f"{repo_id!r}: expected a Hugging Face id like org/name")
    return repo_id


@contextmanager
def hub_errors(repo_id: str, revision: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub and network failures into one HubError that says what to do."""
    import httpx2
    from huggingface_hub import errors as e

    try:
        yield
    except HubError:
        raise
    except e.GatedRepoError:
        raise HubError(
            f"{repo_id!r} is gated: accept its license on https://huggingface.co/{repo_id} "
            "while logged in, then log in here (`hf auth login`, or set HF_TOKEN)"
        ) from None
    except e.RevisionNotFoundError:
        raise HubError(f"{repo_id!r}: the Hub has no revision {revision!r} of it") from None
    except e.RepositoryNotFoundError:
        raise HubError(
            f"{repo_id!r}: no such model on the Hugging Face Hub (check the spelling; a private "
            "model needs `hf auth login` or HF_TOKEN)"
        ) from None
    except e.RemoteEntryNotFoundError as err:
        raise HubError(f"{repo_id!r}: a file is missing on the Hub ({_first_line(err)})") from None
    except e.OfflineModeIsEnabled:
        raise HubUnreachable(offline_message(repo_id)) from None
    except e.HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else 0
        busy = status == 429 or status >= 500  # the Hub's trouble, not the id's
        raise (HubUnreachable if busy else HubError)(
            f"{repo_id!r}: the Hub answered HTTP {status or '?'}: {_first_line(err)}"
        ) from None
    except (httpx2.TransportError, OSError) as err:
        raise HubUnreachable(
            f"{repo_id!r}: the Hugging Face Hub ({endpoint()}) cannot be reached "
            f"({type(err).__name__}: {_first_line(err)}). {cached_models_note()}"
        ) from None


def offline_message(repo_id: str) -> str:
    return (
        f"{repo_id!r} is not in the Hugging Face cache, and offline mode (HF_HUB_OFFLINE) "
        f"forbids downloading it. {cached_models_note()}"
    )


def cached_models_note() -> str:
    ready = [m.repo_id for m in list_cached_models() if m.complete]
    if not ready:
        return "The cache holds no complete model."
    return "Cached and ready: " + ", ".join(sorted(set(ready))) + "."


def repo_files(
    repo_id: str, revision: str | None = None, timeout_s: float = TIMEOUT_S
) -> RemoteRepo:
    """The repo's commit and the files a download would fetch (one Hub API call)."""
    from huggingface_hub import HfApi

    check_repo_id(repo_id)
    if hub_offline():
        raise HubUnreachable(offline_message(repo_id))
    with hub_errors(repo_id, revision):
        api = HfApi(endpoint=endpoint())
        info = api.model_info(repo_id, revision=revision, files_metadata=True, timeout=timeout_s)
    files = []
    for s in info.siblings or []:
        if not wanted(s.rfilename):
            continue
        lfs = s.lfs is not None
        etag = s.lfs.sha256 if s.lfs is not None else (s.blob_id or "")
        size = s.lfs.size if s.lfs is not None else (s.size or 0)
        if not etag:
            raise HubError(f"{repo_id!r}: the Hub gave no hash for {s.rfilename}")
        files.append(RemoteFile(s.rfilename, int(size), etag, lfs))
    if not any(f.name == "config.json" for f in files):
        raise HubError(f"{repo_id!r}: the repo has no config.json; it is not a model mlx-lm loads")
    if not any(fnmatch(f.name, "model*.safetensors") for f in files):
        others = sorted(s.rfilename for s in info.siblings or [] if s.rfilename.endswith((".bin", ".gguf", ".pt")))  # fmt: skip
        found = f" (it has {', '.join(others[:3])})" if others else ""
        raise HubError(
            f"{repo_id!r}: no model*.safetensors weights{found}; mlx-lm loads safetensors only: "
            "look for an mlx-community version, or convert it with mlx_lm.convert"
        )
    gated = info.gated if isinstance(info.gated, str) else ""
    return RemoteRepo(repo_id, revision or "main", str(info.sha), tuple(files), gated)


def fetch_small(repo: RemoteRepo, name: str, timeout_s: float = TIMEOUT_S) -> bytes:
    """One small file's bytes (config.json), straight from the Hub, not into the cache."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    url = hf_hub_url(repo.repo_id, name, revision=repo.commit, endpoint=endpoint())
    with hub_errors(repo.repo_id, repo.revision):
        r = get_session().get(url, headers=build_hf_headers(), timeout=timeout_s)
        hf_raise_for_status(r)
        return r.content


def parse_config(repo: RemoteRepo, raw: bytes) -> dict[str, Any]:
    """config.json of a Hub repo as a dict; HubError naming the file and the fault."""
    name = f"{repo.repo_id}/config.json"
    try:
        config = json.loads(raw)
    except ValueError as e:
        raise HubError(f"{name}: not valid JSON: {e}") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise HubError(f'{name}: model_type: missing (expected e.g. "llama" or "qwen2")')
    return config


def check_remote_config(repo: RemoteRepo, raw: bytes) -> dict[str, Any]:
    """The config of a model mlx-lm can train; HubError before anything is downloaded."""
    config = parse_config(repo, raw)
    if not is_supported(config):
        raise HubError(
            f"{repo.repo_id}/config.json: model_type: {config['model_type']!r} is not supported "
            f"by mlx-lm (no mlx_lm.models.{mlx_model_type(config)}); nothing was downloaded"
        )
    return config


def remote_headers(repo: RemoteRepo, timeout_s: float = TIMEOUT_S) -> dict[str, TensorHeader]:
    """Tensor name -> header for every weight file, read with HTTP range requests."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import SafetensorsParsingError

    api = HfApi(endpoint=endpoint())
    out: dict[str, TensorHeader] = {}
    for f in repo.files:
        if not f.name.endswith(".safetensors"):
            continue
        with hub_errors(repo.repo_id, repo.revision):
            try:
                meta = api.parse_safetensors_file_metadata(
                    repo.repo_id, f.name, revision=repo.commit, timeout=timeout_s
                )
            except SafetensorsParsingError as e:
                raise HubError(
                    f"{repo.repo_id}/{f.name}: not a valid safetensors file: {_first_line(e)}"
                ) from None
        for name, t in meta.tensors.items():
            start, end = t.data_offsets
            out[name] = TensorHeader(name, t.dtype, tuple(t.shape), int(end) - int(start), f.name)
    return out


def inspect_remote(
    repo_id: str, revision: str | None = None, timeout_s: float = TIMEOUT_S
) -> RemoteModel:
    """Size, architecture and LoRA targets of a Hub model before its weights are downloaded.

    A model already complete in the cache is described from disk, with no network (it is
    what a run would use: loading prefers the cache too). ``timeout_s`` bounds each request.
    HubUnreachable when the Hub cannot be asked; HubError for the id itself."""
    from engine.model.inspect import inspect_model

    cached = cached_snapshot(repo_id, revision)
    if cached is not None:
        info = inspect_model(cached)
        files = tuple(RemoteFile(p.name, p.stat().st_size, "", False) for p in _files(cached))
        return RemoteModel(
            RemoteRepo(repo_id, revision or "main", cached.name, files, ""), info, cached
        )
    repo = repo_files(repo_id, revision, timeout_s)
    config = parse_config(repo, fetch_small(repo, "config.json", timeout_s))
    tensors = remote_headers(repo, timeout_s)
    if not tensors:
        raise HubError(f"{repo_id!r}: no model*.safetensors files (mlx-lm loads only safetensors)")
    weights = tuple(f.name for f in repo.files if f.name.endswith(".safetensors"))
    info = describe_model(f"{repo_id}@{repo.commit[:12]}", config, tensors, weights)
    return RemoteModel(repo, info, cached)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file())


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
