"""The embedded engine: a JobSpec becomes a run over gRPC workers, step by step.

Each step goes to every worker at once; each computes gradients on its shard of the global
batch and syncs with its peers directly (the coordinator never touches gradients). The
coordinator sums the per-worker loss and tokens into the run's metrics, validates,
checkpoints (collecting every worker's optimizer shard) and writes the adapter at the end.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from engine.config import JobSpec
from engine.events import EventSink, LogEvent, MetricEvent, StateEvent
from engine.optim import make_schedule
from engine.runtime.cluster import Cluster
from engine.runtime.run_folder import ADAPTER_DIR, attach_run_log, create_run_dir, detach_run_log
from engine.train.checkpoint import load_latest_checkpoint, save_checkpoint
from engine.train.metrics import MetricsLog, Progress
from engine.train.trainer import total_steps_for

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    status: str  # "finished" | "stopped" | "failed"
    run_dir: Path | None
    step: int = 0
    total_steps: int = 0
    train_loss: float | None = None
    val_loss: float | None = None
    adapter_dir: Path | None = None
    message: str = ""


def state_to_arrays(
    states: list[tuple[dict, dict[str, np.ndarray]]],
) -> tuple[dict[str, mx.array], dict]:
    """Checkpoint arrays: the parameters once, every rank's optimizer moments (ZeRO shards)."""
    arrays: dict[str, mx.array] = {"params": mx.array(states[0][1]["params"])}
    for rank, (_, tensors) in enumerate(states):
        for key, value in tensors.items():
            if key != "params":
                arrays[f"rank{rank}.{key}"] = mx.array(value)
    return arrays, {"workers": [meta for meta, _ in states]}


def arrays_to_state(
    arrays: dict[str, mx.array], meta: dict
) -> list[tuple[dict, dict[str, np.ndarray]]]:
    out = []
    params = np.array(arrays["params"])
    for rank, wmeta in enumerate(meta["workers"]):
        prefix = f"rank{rank}."
        tensors = {k[len(prefix) :]: np.array(v) for k, v in arrays.items() if k.startswith(prefix)}
        out.append((wmeta, {"params": params, **tensors}))
    return out


class Coordinator:
    def __init__(self, job: JobSpec, sink: EventSink | None, stop_event: threading.Event,
                 resume_from: str | Path | None = None, data_dir: Path | None = None):  # fmt: skip
        self.job = job
        self.emit: EventSink = sink or (lambda _e: None)
        self.stop_event = stop_event
        self.resume_from = Path(resume_from) if resume_from else None
        self.data_dir = data_dir
        self.run_dir: Path | None = None
        self.cluster: Cluster | None = None

    def run(self) -> RunResult:
        job = self.job
        self.run_dir = self.resume_from or create_run_dir(job)
        handler = attach_run_log(self.run_dir)
        try:
            return self._run(job, self.run_dir)
        except Exception as e:  # noqa: BLE001 - the run ends as "failed" with the reason
            log.exception("run failed")
            msg = str(e) or type(e).__name__
            self.emit(StateEvent("failed", msg, str(self.run_dir)))
            return RunResult("failed", self.run_dir, message=msg)
        finally:
            if self.cluster is not None:
                self.cluster.stop("run ended")
            detach_run_log(handler)

    def _run(self, job: JobSpec, run_dir: Path) -> RunResult:
        r = job.run
        self.emit(StateEvent("preparing", "starting workers", str(run_dir)))
        cluster = self.cluster = Cluster(job, run_dir, self.data_dir)
        cluster.start()
        self.emit(LogEvent("info", f"{cluster.size} workers: {', '.join(cluster.addresses)}"))
        files = cluster.ship_files()
        hostfile = (
            self._mlx_hostfile(cluster) if job.dist.mode == "mlx" and cluster.size > 1 else ""
        )
        infos = cluster.setup(files, run_dir.name, hostfile)
        for i in infos:
            log.info("%s", i["message"])
        total = total_steps_for(job, infos[0]["train_items"])
        schedule = make_schedule(job.optim, total)
        start = 0
        if self.resume_from is not None:
            ckpt = load_latest_checkpoint(run_dir)
            if len(ckpt.meta.get("workers", [])) != cluster.size:
                raise ValueError(f"{ckpt.path}: saved by {len(ckpt.meta.get('workers', []))} workers, "
                                 f"this run has {cluster.size}; resume with the same number of workers")  # fmt: skip
            cluster.put_states(arrays_to_state(ckpt.arrays, ckpt.meta))
            start = ckpt.step
            self.emit(LogEvent("info", f"resumed from {ckpt.path.name} at step {start}"))
        metrics = MetricsLog(run_dir, self.emit, resume_step=start if self.resume_from else None)
        progress = Progress(start, total)
        self.emit(StateEvent("running", f"{total - start} steps on {cluster.size} workers", str(run_dir),
                             {"start_step": start, "total_steps": total, "workers": cluster.size}))  # fmt: skip
        train_loss = val_loss = None
        step, saved_at, stopped = start, start, False
        try:
            for i in range(start, total):
                if self.stop_event.is_set():
                    stopped = True
                    break
                t0 = time.perf_counter()
                outs = cluster.step(i, schedule(i))
                dt = time.perf_counter() - t0
                step = i + 1
                train_loss = self._step_metrics(metrics, step, schedule(i), outs, dt)
                self.emit(progress.event(step))
                if r.val_every and (step % r.val_every == 0 or step == total):
                    val_loss = self._validate(metrics, cluster, step) or val_loss
                if (r.checkpoint_every and step % r.checkpoint_every == 0) or step == total:
                    self._checkpoint(cluster, step, total)
                    saved_at = step
            if stopped and step != saved_at:
                self._checkpoint(cluster, step, total)
        finally:
            metrics.close()
        adapter_dir = self._write_adapter(cluster, step)
        status = "stopped" if stopped else "finished"
        self.emit(
            StateEvent(
                status, f"step {step} of {total}", str(run_dir), {"adapter_dir": str(adapter_dir)}
            )
        )
        return RunResult(status, run_dir, step, total, train_loss, val_loss, adapter_dir)

    def _step_metrics(
        self, metrics: MetricsLog, step: int, lr: float, outs: list, dt: float
    ) -> float:
        tokens = sum(o.tokens for o in outs)
        loss = sum(o.loss_sum for o in outs) / max(tokens, 1)
        comm = max(o.comm_s for o in outs)
        values = {
            "train_loss": loss, "learning_rate": lr, "tokens": float(tokens),
            "tokens_per_s": tokens / dt if dt > 0 else 0.0, "step_time_s": dt,
            "grad_norm": outs[0].grad_norm, "compute_s": max(o.compute_s for o in outs), "comm_s": comm,
            "comm_share": comm / dt if dt > 0 else 0.0,
            "peak_memory_gb": max(o.peak_memory_bytes for o in outs) / 1e9, "workers": float(len(outs)),
        }  # fmt: skip
        if any(o.skipped for o in outs):
            values["skipped"] = 1.0
        metrics.emit(MetricEvent(step=step, values=values))
        for rank, o in enumerate(outs):
            row = {"loss": o.loss_sum / max(o.tokens, 1), "tokens": float(o.tokens), "compute_s": o.compute_s,
                   "comm_s": o.comm_s, "peak_memory_gb": o.peak_memory_bytes / 1e9}  # fmt: skip
            metrics.emit(MetricEvent(step=step, values=row, kind="worker", worker=rank))
        return loss

    def _validate(self, metrics: MetricsLog, cluster: Cluster, step: int) -> float | None:
        loss_sum, ntok = cluster.evaluate(step, self.job.run.val_batches)
        if ntok == 0:
            return None
        val = loss_sum / ntok
        metrics.emit(MetricEvent(step=step, values={"val_loss": val}, kind="val"))
        log.info("step %d: val_loss %.4f", step, val)
        return val

    def _checkpoint(self, cluster: Cluster, step: int, total: int) -> None:
        arrays, meta = state_to_arrays(cluster.get_states(step))
        meta.update({"total_steps": total, "mode": self.job.dist.mode, "world": cluster.size})
        path = save_checkpoint(
            self.run_dir, step, arrays, meta, self.job.to_toml(), self.job.run.keep_checkpoints
        )
        log.info("checkpoint %s", path)
        self.emit(
            StateEvent(
                "checkpointed", f"step {step}", str(self.run_dir), {"step": step, "path": str(path)}
            )
        )

    def _write_adapter(self, cluster: Cluster, step: int) -> Path:
        out = self.run_dir / ADAPTER_DIR
        out.mkdir(parents=True, exist_ok=True)
        for name, data in cluster.adapter_files(step).items():
            tmp = out / f".{name}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, out / name)
        log.info("adapter written to %s", out)
        return out

    def _mlx_hostfile(self, cluster: Cluster) -> str:
        import json

        from engine.dist.mlx_env import write_ring_hostfile

        hosts = [a.rsplit(":", 1)[0] for a in cluster.addresses]
        return json.dumps(write_ring_hostfile(self.run_dir / "mlx_hostfile.json", hosts))
