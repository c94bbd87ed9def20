"""`orchard demo`: the whole job on this machine with N local workers, nothing downloaded.

The bundled model (resources/models/stories260K: a tiny pretrained story model, not an
assistant) learns the bundled Pip-the-robot dataset. Every other setting is JobSpec's default.
"""

from __future__ import annotations

import threading
from pathlib import Path

from engine.config import DEMO_DATASET, DEMO_MODEL, JobSpec
from engine.events import EventSink, LogEvent
from engine.runtime.coordinator import RunResult
from engine.runtime.run_handle import start_run

DEMO_NOTICE = (
    "Demo: the bundled TinyStories-260K model is a tiny pretrained story model, not an "
    "assistant; it learns short stories about Pip, a robot in an apple orchard."
)


# What the demo changes from JobSpec's defaults, and why: the model is tiny (dim 64), so
# LoRA on every linear at a higher learning rate shows its effect within ~150 steps.
DEMO_SETTINGS = [
    'lora.target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]',
    "optim.learning_rate=3e-3",
    "optim.warmup_steps=10",
]
DEMO_STEPS = 150


def demo_job(
    steps: int, out_dir: str | Path, workers: int, mode: str, overrides: list[str] | None = None
) -> JobSpec:
    job = JobSpec().with_overrides(
        [f'model.path="{DEMO_MODEL}"', f'data.path="{DEMO_DATASET}"', f"run.steps={steps}",
         f'run.out_dir="{Path(out_dir).expanduser().resolve()}"', f"dist.workers={workers}",
         f'dist.mode="{mode}"', *DEMO_SETTINGS, *(overrides or [])]
    )  # fmt: skip
    return job


def run_demo(
    steps: int,
    out_dir: str | Path,
    workers: int = 2,
    mode: str = "all-reduce",
    sink: EventSink | None = None,
    stop_event: threading.Event | None = None,
    overrides: list[str] | None = None,
) -> RunResult:
    """Train the demo on ``workers`` local worker processes; blocks until the run ends."""
    job = demo_job(steps, out_dir, workers, mode, overrides)
    if sink is not None:
        sink(LogEvent("info", DEMO_NOTICE))
    result = start_run(job, sink, stop_event).wait()
    assert result is not None  # wait() without a timeout returns only when the run ended
    return result
