"""What a network worker may read: only files the coordinator sent, or a Hugging Face id.

A job's TOML names paths (data.path, data.valid_path, model.path). On a worker started by a
local engine those are the engine's own paths; on a network worker they come from a remote
caller, so each must be replaced by a shipped file (cached by sha256 in the worker's folder)
or, for the model, be a Hugging Face id. Anything else would let a caller read files outside
the worker's folders.
"""

from __future__ import annotations

import re

from engine.config import ConfigError, JobSpec
from engine.worker.errors import InvalidRequest

_HF_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_confined(job_toml: str, files: dict[str, str]) -> None:
    """Raise InvalidRequest naming the field when the job would read a path of this machine."""
    try:
        job = JobSpec.from_toml(job_toml, source="SetupJob.job_toml")
    except ConfigError:
        return  # the job build reports bad settings with their own messages
    if "dataset" not in files:
        raise InvalidRequest(
            "data.path: a network worker trains only on files the coordinator sends "
            "(the 'dataset' file is missing from SetupJob.files)"
        )
    if job.data.valid_path and "valid" not in files:
        raise InvalidRequest(
            "data.valid_path: a network worker reads only files the coordinator sends "
            "(the 'valid' file is missing from SetupJob.files)"
        )
    shipped_model = any(role.startswith("model/") for role in files)
    path = job.model.path
    if not shipped_model and (not _HF_ID.match(path) or ".." in path):
        raise InvalidRequest(
            f"model.path {path[:80]!r}: a network worker loads a model the coordinator sends "
            "or a Hugging Face id (org/name), never a path on its own disk"
        )
