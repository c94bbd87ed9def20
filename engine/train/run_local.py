"""One job on this machine, in one process: model, LoRA, data, train, adapter.

Everything a user can get wrong (job, model, data, LoRA settings, a damaged checkpoint)
ends as a ``failed`` state with a message naming the problem, not a traceback.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from engine.config import ConfigError, JobSpec
from engine.data import BatchSampler, DatasetError, prepare_data
from engine.events import EventSink, LogEvent, StateEvent
from engine.lora import LoraError, apply_lora, save_adapter
from engine.model import ModelError, load_model
from engine.model.grad_checkpoint import enable_grad_checkpoint
from engine.train.checkpoint import CheckpointError
from engine.train.run_dir import (
    ADAPTER_DIR,
    JOB_FILE,
    attach_log_file,
    detach_log_file,
    new_run_dir,
)
from engine.train.step import packing_for
from engine.train.trainer import train

log = logging.getLogger(__name__)

USER_ERRORS = (ConfigError, ModelError, DatasetError, LoraError, CheckpointError)


@dataclass
class RunResult:
    run_dir: Path
    state: str  # "finished" | "stopped" | "failed"
    step: int = 0
    total_steps: int = 0
    train_loss: float | None = None
    val_loss: float | None = None
    adapter_dir: Path | None = None
    message: str = ""


def run_local(
    job: JobSpec, sink: EventSink | None = None, stop_event: threading.Event | None = None
) -> RunResult:
    """Train ``job`` here in a new run folder under ``job.run.out_dir``."""
    job.validate()
    return _run(job, new_run_dir(job), sink, stop_event, resume=False)


def resume_local(
    run_dir: str | Path, sink: EventSink | None = None, stop_event: threading.Event | None = None
) -> RunResult:
    """Continue the run in ``run_dir`` from its newest good checkpoint, with its job.toml."""
    run_dir = Path(run_dir)
    try:
        job = JobSpec.load(run_dir / JOB_FILE)
    except ConfigError as e:
        return _failed(run_dir, sink, str(e))
    return _run(job, run_dir, sink, stop_event, resume=True)


def _failed(run_dir: Path, sink: EventSink | None, message: str) -> RunResult:
    log.error("run failed: %s", message)
    if sink is not None:
        sink(LogEvent("error", message))
        sink(StateEvent("failed", message, str(run_dir)))
    return RunResult(run_dir, "failed", message=message)


def _run(
    job: JobSpec,
    run_dir: Path,
    sink: EventSink | None,
    stop_event: threading.Event | None,
    resume: bool,
) -> RunResult:
    emit = sink or (lambda _e: None)
    handler = attach_log_file(run_dir)
    try:
        emit(StateEvent("preparing", "loading the model and the data", str(run_dir)))
        loaded = load_model(job.model)
        report = apply_lora(loaded.model, job.lora, seed=job.run.seed)
        if job.run.grad_checkpoint:
            enable_grad_checkpoint(loaded.model)
        log.info("%d trainable parameters", report.trainable_params)
        packing = packing_for(loaded.model, job.data.packing)
        data = prepare_data(job.data, loaded.tokenizer, seed=job.run.seed, packing=packing)
        sampler = BatchSampler(data.train.lengths(), job.run.batch_size, job.run.seed)
        result = train(
            job,
            loaded.model,
            data.train,
            data.valid,
            sampler,
            run_dir,
            sink,
            stop_event,
            pad_id=data.pad_id,
            resume=resume,
        )
        adapter = save_adapter(loaded.model, run_dir / ADAPTER_DIR, job, job.model.path)
        state = "stopped" if result.stopped else "finished"
        message = f"step {result.step} of {result.total_steps}"
        log.info("run %s at %s; adapter in %s", state, message, adapter)
        emit(StateEvent(state, message, str(run_dir), {"adapter": str(adapter)}))
        return RunResult(
            run_dir,
            state,
            result.step,
            result.total_steps,
            result.train_loss,
            result.val_loss,
            adapter,
            message,
        )
    except USER_ERRORS as e:
        return _failed(run_dir, sink, str(e))
    except Exception as e:  # a bug: keep the traceback in log.txt, tell the user where
        log.exception("run failed")
        return _failed(run_dir, sink, f"internal error: {e!r} (details in {run_dir / 'log.txt'})")
    finally:
        detach_log_file(handler)
