"""Compiled step, single-process trainer, validation, metrics.jsonl and checkpoints."""

from engine.train.checkpoint import (
    Checkpoint,
    CheckpointError,
    list_checkpoints,
    load_latest_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from engine.train.metrics import METRICS_FILE, MetricsLog, Progress, read_metrics
from engine.train.run_dir import attach_log_file, detach_log_file, new_run_dir
from engine.train.run_local import RunResult, resume_local, run_local
from engine.train.step import (
    DeviceBatch,
    Evaluator,
    GradientStep,
    compute_gradients,
    to_device,
    token_loss_sum,
)
from engine.train.trainer import TrainResult, step_seed, total_steps_for, train, validation_sums
from engine.train.update import Updater, UpdateResult, cast_for_compute

__all__ = [
    "METRICS_FILE",
    "Checkpoint",
    "CheckpointError",
    "DeviceBatch",
    "Evaluator",
    "GradientStep",
    "MetricsLog",
    "Progress",
    "RunResult",
    "TrainResult",
    "UpdateResult",
    "Updater",
    "cast_for_compute",
    "attach_log_file",
    "compute_gradients",
    "detach_log_file",
    "list_checkpoints",
    "load_latest_checkpoint",
    "new_run_dir",
    "read_metrics",
    "resume_local",
    "run_local",
    "save_checkpoint",
    "step_seed",
    "to_device",
    "token_loss_sum",
    "total_steps_for",
    "train",
    "validation_sums",
    "verify_checkpoint",
]
