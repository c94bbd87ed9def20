"""A prompt to try an adapter with, taken from the dataset it was trained on (worker thread).

The Results page starts with one so a first try needs no typing; a held-out (validation)
record is preferred, since it shows what the adapter learned rather than what it memorised.
"""

from __future__ import annotations

from pathlib import Path

from engine.config import ConfigError, JobSpec, resolve_data_path
from engine.data import read_dataset
from engine.data.prepare import split_records
from engine.data.records import Record
from engine.train.run_dir import JOB_FILE

TEXT_PROMPT_WORDS = 12  # a plain-text record: its opening words, for the model to go on


def prompt_of(record: Record) -> str:
    """The user's part of a record, as generation sends it (one user message)."""
    if record.is_text:
        return " ".join((record.text or "").split()[:TEXT_PROMPT_WORDS])
    users = [m for m in record.messages if m.get("role") == "user"]
    return str(users[0].get("content", "")).strip() if users else ""


def sample_prompt(adapter_dir: str, fallback_job: JobSpec | None = None) -> str:
    """A prompt from the dataset of the run that wrote ``adapter_dir`` ('' when none)."""
    job_file = Path(adapter_dir).parent / JOB_FILE
    try:
        job = JobSpec.load(job_file) if job_file.is_file() else fallback_job
    except ConfigError:
        job = fallback_job
    if job is None:
        return ""
    read = read_dataset(resolve_data_path(job.data.path), job.data.format, max_problems=1)
    held_out = read.splits.get("valid") or (
        split_records(read.records, job.data.valid_fraction, job.run.seed)[1]
        if not job.data.valid_path
        else []
    )
    for record in list(held_out) + list(read.records):
        text = prompt_of(record)
        if text:
            return text
    return ""
