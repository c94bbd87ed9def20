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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.config import JobSpec
from engine.events import SHOWN, EventSink, LogEvent, MetricEvent, StateEvent
from engine.optim import make_schedule
from engine.runtime import balance as bal
from engine.runtime.cluster import Cluster
from engine.runtime.full_state import (
    FullState,
    from_checkpoint,
    gather,
    moment_range,
    split,
    to_checkpoint,
)
from engine.runtime.lost_workers import FinishedStep, LostWorkers, RunHalted, checkpoint_note
from engine.runtime.out_of_memory import memory_failure
from engine.runtime.recovery import StepAbandoned, Watcher, WorkerLost
from engine.runtime.rejoin import Rejoiner
from engine.runtime.returning_workers import ReturningWorkers
from engine.runtime.warm_workers import WarmWorkers
from engine.train.checkpoint import load_latest_checkpoint, save_checkpoint
from engine.train.metrics import METRICS_FILE, MetricsLog, Progress, read_metrics
from engine.train.run_dir import (
    ADAPTER_DIR,
    JOB_FILE,
    attach_log_file,
    detach_log_file,
    new_run_dir,
)
from engine.train.trainer import total_steps_for

log = logging.getLogger(__name__)

SNAPSHOT_SHARE = 0.005  # in-memory snapshots may take this share of the run's time


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


class Coordinator(LostWorkers, ReturningWorkers):
    def __init__(self, job: JobSpec, sink: EventSink | None, stop_event: threading.Event,
                 resume_from: str | Path | None = None, data_dir: Path | None = None,
                 warm: WarmWorkers | None = None):  # fmt: skip
        self.job = job
        self.emit: EventSink = sink or (lambda _e: None)
        self.stop_event = stop_event
        self.resume_from = Path(resume_from) if resume_from else None
        self.data_dir = data_dir
        self.warm = warm  # local workers started ahead (engine/runtime/warm_workers.py)
        self.run_dir: Path | None = None
        self.cluster: Cluster | None = None
        self.watcher: Watcher | None = None
        self.rejoiner: Rejoiner | None = None
        self.balancer: bal.Balancer | None = None  # each step's split of the global batch
        self.snapshot: FullState | None = None  # the state a recovery restarts from
        self.failures = 0
        self._files: dict[str, str] = {}
        self._snap_cost = 0.0  # seconds the last snapshot took
        self._snap_at = 0.0  # time.monotonic() of the last snapshot
        self._snaps = [0, 0.0]  # snapshots taken, seconds they took (reported at the end)
        self._regroup_info: dict = {}  # the last regroup's figures, for its event
        self.finished_step: FinishedStep | None = None  # by survivors of a lost worker
        self.tracker = None  # dist.mode auto: the plan, against measured steps (engine/plan)

    def run(self) -> RunResult:
        job = self.job
        self.run_dir = self.resume_from or new_run_dir(job)
        handler = attach_log_file(self.run_dir)
        try:
            return self._run(job, self.run_dir)
        except Exception as e:  # noqa: BLE001 - the run ends as "failed" with the reason
            log.exception("run failed")
            # a worker's memory guard may be why (say so, not "connection refused")
            settle = 0.5 if getattr(e, "unreachable", False) else 0.0
            msg = memory_failure(self.cluster, settle_s=settle) or str(e) or type(e).__name__
            self.emit(StateEvent("failed", msg, str(self.run_dir)))
            return RunResult("failed", self.run_dir, message=msg)
        finally:
            if self.watcher is not None:
                self.watcher.close()
            if self.rejoiner is not None:
                self.rejoiner.close()
            if self.cluster is not None:
                self.cluster.stop("run ended")
            if self.warm is not None:  # workers started ahead that no cluster took
                self.warm.close()
            detach_log_file(handler)

    def _run(self, job: JobSpec, run_dir: Path) -> RunResult:
        r = job.run
        self.emit(StateEvent("preparing", "starting workers", str(run_dir)))
        cluster = self.cluster = Cluster(
            job, run_dir, self.data_dir, self.emit, self.stop_event, self.warm
        )
        cluster.start()
        self.emit(LogEvent("info", f"{cluster.size} workers: {', '.join(cluster.addresses)}"))
        job = self._resolve_auto(cluster, run_dir)
        r = job.run
        self._files = cluster.ship_files()
        self.balancer = self._start_balancer(cluster)  # probes before any model is loaded
        cluster.keep_spares()  # mlx, local workers: their imports overlap the setup, not a step
        infos = self._setup_group()
        # survivors of a lost peer are not stopped by the Watcher: a Regroup fails their
        # step and keeps their job; only when that cannot be does _recover stop them
        self.watcher = Watcher(cluster, abort_survivors=False, stop_event=self.stop_event)
        if job.dist.rejoin:  # a worker that is back is set up ahead where it joins in place
            ahead = self.peer_state and job.dist.mode != "mlx"
            self.rejoiner = Rejoiner(cluster, run_dir.name, prepare=ahead)
        for i in infos:
            log.info("%s", i["message"])
        total = total_steps_for(job, infos[0]["train_items"])
        schedule = make_schedule(job.optim, total)
        start = 0
        if self.resume_from is not None:
            ckpt = load_latest_checkpoint(run_dir)
            self.snapshot = from_checkpoint(ckpt.arrays, ckpt.meta, ckpt.step)
            cluster.put_states(split(self.snapshot, job.dist.mode, cluster.size))
            start = ckpt.step
            self.emit(LogEvent("info", f"resumed from {ckpt.path.name} at step {start} "
                                       f"({ckpt.meta.get('world', '?')} -> {cluster.size} workers)"))  # fmt: skip
            self._resume_balancer(ckpt.meta, start)
        else:
            self._take_start_snapshot()
        metrics = MetricsLog(run_dir, self.emit, resume_step=start if self.resume_from else None)
        progress = Progress(start, total)
        self.emit(StateEvent("running", f"{total - start} steps on {cluster.size} workers", str(run_dir),
                             {"start_step": start, "total_steps": total, "workers": cluster.size,
                              **self._plan_details()}))  # fmt: skip
        train_loss = val_loss = None
        step, saved_at, stopped = start, start, False
        saving: Future | None = None  # the final checkpoint, written on a thread of its own
        try:
            while step < total:
                if self.stop_event.is_set():
                    stopped = True
                    break
                i = step
                try:
                    t0, began = time.perf_counter(), time.time()
                    carried, self.finished_step = self.finished_step, None
                    if carried is not None:  # the survivors of a lost worker finished it
                        outs, plan, dt = carried.outs, carried.plan, carried.dt
                    else:
                        plan = self.balancer.plan(i)
                        outs = self.watcher.call("Step", lambda r, c, i=i, sp=plan: c.step(
                            i, schedule(i), timeout_s=call_deadline(job), shares=sp.shares,
                            micro_batches=sp.micro_batches[r]))  # fmt: skip
                        dt = time.perf_counter() - t0
                    step = i + 1
                    train_loss = self._step_metrics(metrics, step, schedule(i), outs, dt, plan,
                                                    whole_group=carried is None)  # fmt: skip
                    if carried is None and (note := self.balancer.observe(i, outs)):
                        self._note(note)
                    cluster.keep_spares()  # mlx, local workers: fresh processes held ready
                    self.emit(progress.event(step))
                    if r.val_every and (step % r.val_every == 0 or step == total):
                        val_loss = self._validate(metrics, step) or val_loss
                    if (r.checkpoint_every and step % r.checkpoint_every == 0) or step == total:
                        # the last one is written while the adapter comes from the workers
                        saving = self._checkpoint(step, total, background=step == total)
                        saved_at = step
                    elif self._snapshot_due():
                        self._take_snapshot(step)
                    if self.rejoiner is not None and step < total:
                        if back := self.rejoiner.ready():
                            self._rejoin(back, step)
                except WorkerLost as lost:
                    metrics.close()
                    step = self._recover(lost, i, began, done=step, plan=plan)
                    saved_at = min(saved_at, step)
                    metrics = MetricsLog(run_dir, self.emit, resume_step=step)
            if stopped and step != saved_at:
                self._checkpoint(step, total)
        except RunHalted as e:
            self.emit(StateEvent("failed", str(e), str(run_dir), {"step": self.snapshot.step}))
            return RunResult(
                "failed", run_dir, self.snapshot.step, total, train_loss, val_loss, message=str(e)
            )
        except StepAbandoned as e:
            return self._stopped_mid_step(e, saved_at, total, train_loss, val_loss)
        finally:
            metrics.close()
        try:
            adapter_dir = self._write_adapter(cluster, step)
        finally:
            if saving is not None:
                saving.result()  # complete on disk before the run ends, whatever else failed
        (n, spent), elapsed = self._snaps, time.perf_counter() - progress.t0
        log.info("%d snapshots (checkpoints included) took %.2fs of %.1fs training (%.1f%%)",
                 n, spent, elapsed, 100 * spent / max(elapsed, 1e-9))  # fmt: skip
        status = "stopped" if stopped else "finished"
        self.emit(
            StateEvent(
                status, f"step {step} of {total}", str(run_dir), {"adapter_dir": str(adapter_dir)}
            )
        )
        return RunResult(status, run_dir, step, total, train_loss, val_loss, adapter_dir)

    def _resolve_auto(self, cluster: Cluster, run_dir: Path) -> JobSpec:
        """dist.mode "auto" -> the planner's concrete choice, before any worker sets up; the
        run folder's job.toml then names it, so a resume sees the same concrete job."""
        from engine.plan.resolve import resolve_auto

        job, self.tracker, msg = resolve_auto(self.job, cluster)
        if job is not self.job:
            self.job = cluster.job = job
            (run_dir / JOB_FILE).write_text(job.to_toml(), encoding="utf-8")
            self._note(msg)
        return job

    def _plan_details(self) -> dict:
        """dist.mode auto: the plan as plain data, for the app's "measured against predicted"."""
        from engine.plan.resolve import plan_details

        if self.tracker is None or self.cluster is None:
            return {}
        # local: processes of this one machine (speedup is over the machine in one process)
        return {"plan": {**plan_details(self.tracker.plan), "local": not self.cluster.remote}}

    def _setup_group(self) -> list:
        """SetupJob on every worker with the current ranks (and MLX's hostfile); a group
        of other workers gets a split of its own."""
        assert self.cluster is not None and self.run_dir is not None
        cluster = self.cluster
        mlx = self.job.dist.mode == "mlx" and cluster.size > 1
        hostfile = self._mlx_hostfile(cluster) if mlx else ""
        infos = cluster.setup(self._files, self.run_dir.name, hostfile)
        b = self.balancer
        if b is not None and b.addresses != cluster.addresses:
            self._note(b.regroup(cluster.addresses, self.snapshot.step if self.snapshot else 0))
        return infos

    def _start_balancer(self, cluster: Cluster) -> bal.Balancer:
        """Probe every worker (free memory, and its speed when the split follows speed),
        unless dist.mode auto just did, and make the first split."""
        job, balancer = self.job, bal.Balancer(self.job)
        if self.tracker is not None:  # dist.mode auto probed them already: the plan's split
            macs = {m.name: m for m in self.tracker.plan.macs}
            probes = [bal.Probe(macs[a].free_memory_bytes, macs[a].flops) if a in macs
                      else "not in the plan" for a in cluster.addresses]  # fmt: skip
        else:
            bench = job.dist.balance == "speed" and not job.dist.speeds and cluster.size > 1
            probes = bal.probe_workers(cluster.all, bench)
        free = [p.free_bytes if isinstance(p, bal.Probe) else None for p in probes]
        caps = bal.memory_caps(job, bal.model_info(job), cluster.addresses, free)
        for note in balancer.begin(cluster.addresses, probes, caps):
            self._note(note)
        return balancer

    def _resume_balancer(self, meta: dict, start: int) -> None:
        """Go on with the checkpoint's split and speeds; steps the run before the resume
        already took past the checkpoint are repeated with the splits it recorded."""
        assert self.balancer is not None and self.run_dir is not None
        if note := self.balancer.restore(meta.get("balance") or {}, start):
            self._note(note)
        path = self.run_dir / METRICS_FILE
        rows = read_metrics(path) if path.is_file() else []
        self.balancer.replay(bal.recorded_splits(rows, start, self.cluster.size))

    def _note(self, message: str, level: str = "info", running: dict | None = None) -> None:
        """A line for the log and the event stream; with ``running``, also the run's state
        event carrying that detail (a recovery, a rejoin)."""
        log.log(logging.getLevelName(level.upper()), "%s", message, extra=SHOWN)
        self.emit(LogEvent(level, message))
        if running is not None:
            self.emit(StateEvent("running", message, str(self.run_dir), running))

    def _step_metrics(self, metrics: MetricsLog, step: int, lr: float, outs: list, dt: float,
                      plan: bal.Split, whole_group: bool = True) -> float:  # fmt: skip
        """The step's metric rows; ``whole_group`` False: ``outs`` are the survivors' of a
        step a lost worker took part in (the loss and tokens are then the group's, which
        every worker receives with the gradients; the figures by worker are the survivors')."""
        tokens = sum(o.tokens for o in outs)  # trained tokens: tokens/s counts these
        work = sum(o.work_tokens for o in outs)  # computed, padding included
        loss = sum(o.loss_sum for o in outs) / max(tokens, 1)
        if not whole_group:
            tokens = outs[0].group_tokens
            loss = outs[0].group_loss_sum / max(tokens, 1)
        comm = max(o.comm_s for o in outs)
        hidden = min(o.comm_hidden_s for o in outs)
        values = {
            "train_loss": loss, "learning_rate": lr, "tokens": float(tokens),
            "tokens_per_s": tokens / dt if dt > 0 else 0.0, "step_time_s": dt,
            "work_tokens": float(work), "work_tokens_per_s": work / dt if dt > 0 else 0.0,
            "grad_norm": outs[0].grad_norm, "compute_s": max(o.compute_s for o in outs), "comm_s": comm,
            "comm_share": comm / dt if dt > 0 else 0.0,
            "comm_hidden_share": hidden / comm if comm > 0 else 0.0,
            "peak_memory_gb": max(o.peak_memory_bytes for o in outs) / 1e9, "workers": float(len(outs)),
        }  # fmt: skip
        if whole_group:
            values.update(self._plan_figures(dt, outs, plan))
        else:  # work counts the survivors' only: not a throughput to compare
            del values["work_tokens"], values["work_tokens_per_s"]
        if any(o.skipped for o in outs):
            values["skipped"] = 1.0
            log.warning("step %d: update skipped (fp16 overflow or no target tokens)", step)
        if self.job.run.precision == "fp16":
            values["loss_scale"] = outs[0].loss_scale
            if len({o.loss_scale for o in outs}) > 1:  # every rank sees the same global norm
                log.error("step %d: workers disagree on the loss scale: %s", step,
                          [o.loss_scale for o in outs])  # fmt: skip
        metrics.emit(MetricEvent(step=step, values=values))
        for rank, o in enumerate(outs):
            row = {"loss": o.loss_sum / max(o.tokens, 1), "tokens": float(o.tokens), "compute_s": o.compute_s,
                   "comm_s": o.comm_s, "comm_hidden_s": o.comm_hidden_s, "grad_s": o.grad_s, "work_tokens": float(o.work_tokens),
                   "peak_memory_gb": o.peak_memory_bytes / 1e9,
                   "share": float(plan.shares[rank]), "micro_batches": float(plan.micro_batches[rank])}  # fmt: skip
            metrics.emit(MetricEvent(step=step, values=row, kind="worker", worker=rank))
        return loss

    def _plan_figures(self, dt: float, outs: list, split: bal.Split) -> dict[str, float]:
        """Measured against predicted (dist.mode auto: the Tracker) and the step's scaling
        efficiency, as engine/plan/efficiency.py defines it (local processes: one machine)."""
        from engine.plan.efficiency import WorkerStep, measured_efficiency
        from engine.plan.resolve import host_of

        steps = [WorkerStep(o.tokens, o.work_tokens, o.grad_s, o.compute_s, split.micro_batches[r])
                 for r, o in enumerate(outs)]  # fmt: skip
        if self.tracker is not None and len(outs) == len(self.tracker.plan.macs):
            return self.tracker.observe(dt, steps)
        if len(outs) < 2 or self.cluster is None:
            return {}
        machines = [host_of(a) for a in self.cluster.addresses]
        if len(machines) != len(outs):
            return {}
        rates = self.balancer.measured() if self.balancer is not None else {}
        known = {r: rates[a] for r, a in enumerate(self.cluster.addresses) if a in rates}
        eff = measured_efficiency(dt, steps, machines, known)
        return {"scaling_efficiency": eff} if eff > 0 else {}

    def _validate(self, metrics: MetricsLog, step: int) -> float | None:
        assert self.watcher is not None
        n, timeout = self.job.run.val_batches, call_deadline(self.job)
        parts = self.watcher.call("Evaluate", lambda _r, c: c.evaluate(step, n, timeout_s=timeout))
        loss_sum, ntok = sum(p[0] for p in parts), sum(p[1] for p in parts)
        if ntok == 0:
            return None
        val = loss_sum / ntok
        metrics.emit(MetricEvent(step=step, values={"val_loss": val}, kind="val"))
        log.info("step %d: val_loss %.4f", step, val)
        return val

    def _snapshot_due(self) -> bool:
        """Snapshot as often as costs SNAPSHOT_SHARE of the time: a lost worker then costs
        the steps since the last snapshot, not since the last checkpoint on disk."""
        return time.monotonic() - self._snap_at >= self._snap_cost / SNAPSHOT_SHARE

    def _take_snapshot(self, step: int) -> None:
        """The group's whole state, in memory: what a recovery restarts from."""
        t0 = time.monotonic()
        self.snapshot = self._gather_state(step)
        self._count_snapshot(t0)

    def _count_snapshot(self, t0: float, whole_share: float = 1.0) -> None:
        """Account for a snapshot begun at ``t0``; ``whole_share``: the share of a whole
        snapshot's bytes it moved (its cost, scaled to a whole one, paces the next)."""
        self._snap_at = time.monotonic()
        self._snap_cost = (self._snap_at - t0) / whole_share
        self._snaps[0] += 1
        self._snaps[1] += self._snap_at - t0

    def _take_start_snapshot(self) -> None:
        """The state at step 0, for a recovery before the first snapshot: rank 0's
        parameters (every worker starts from the same ones) and AdamW's zero moments, a
        third of one worker's state instead of every worker's whole state (46M trainable
        parameters: 184 MB, not 550 MB per worker). Its cost, scaled to the bytes of a whole
        snapshot, paces the next one."""
        assert self.watcher is not None and self.cluster is not None
        t0 = time.monotonic()
        parts = self.watcher.call("GetState", lambda r, c: c.get_state(0, params_only=True) if r == 0 else None)  # fmt: skip
        meta, tensors = parts[0]
        params = np.asarray(tensors["params"], np.float32)
        n = params.size
        m, v = tensors.get("m"), tensors.get("v")  # an older worker sends its whole state
        if m is None or v is None or m.size != n or v.size != n:
            m, v = np.zeros(n, np.float32), np.zeros(n, np.float32)
        self.snapshot = FullState(
            step=0, params=params, m=np.asarray(m, np.float32), v=np.asarray(v, np.float32),
            adam_step=int(meta.get("adam_step", 0)), opt_steps=int(meta.get("steps", 0)),
            loss_scale=meta.get("loss_scale"),
        )  # fmt: skip
        mode, world = self.job.dist.mode, self.cluster.size
        whole = sum(n + 2 * (hi - lo) for lo, hi in (moment_range(mode, r, world, n) for r in range(world)))  # fmt: skip
        self._count_snapshot(t0, whole_share=max(n, 1) / max(whole, 1))

    def _gather_state(self, step: int) -> FullState:
        assert self.watcher is not None
        return gather(self.watcher.call("GetState", lambda _r, c: c.get_state(step)))

    def _stopped_mid_step(self, e: StepAbandoned, saved_at: int, total: int,
                          train_loss: float | None, val_loss: float | None) -> RunResult:  # fmt: skip
        """Stop could not wait for the step: keep the newest consistent state held, the
        in-memory snapshot, as a checkpoint when it is newer than the last one."""
        snap = self.snapshot
        assert snap is not None and self.run_dir is not None
        if snap.step > saved_at:
            self._save_checkpoint(total)
        kept = checkpoint_note(self.run_dir)
        msg = f"stopped: {e}; the workers were stopped. {kept}"
        log.warning("%s", msg, extra=SHOWN)
        self.emit(StateEvent("stopped", msg, str(self.run_dir), {"step": snap.step}))
        return RunResult("stopped", self.run_dir, snap.step, total, train_loss, val_loss,
                         message=msg)  # fmt: skip

    def _checkpoint(self, step: int, total: int, background: bool = False) -> Future | None:
        """Save the world-size-independent state; it is also what a recovery restarts from.
        ``background``: the file is written on a thread (its future is returned) once the
        state is gathered; the caller waits for it (the last checkpoint: 40M trainable
        parameters on a 2-core VM, a 1.0-1.7 s write that overlaps the adapter's fetch)."""
        self._take_snapshot(step)
        if not background:
            self._save_checkpoint(total)
            return None
        saver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="orchard-checkpoint")
        try:
            return saver.submit(self._save_checkpoint, total)
        finally:
            saver.shutdown(wait=False)  # the thread ends with the write

    def _save_checkpoint(self, total: int) -> None:
        assert self.cluster is not None and self.snapshot is not None
        step = self.snapshot.step
        arrays, meta = to_checkpoint(self.snapshot)
        meta.update({"total_steps": total, "mode": self.job.dist.mode, "world": self.cluster.size})
        if self.balancer is not None:  # the split goes on from here on resume
            meta["balance"] = self.balancer.state()
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

        hosts = cluster.ring_addresses()  # each worker's own port, held on its host
        return json.dumps(write_ring_hostfile(self.run_dir / "mlx_hostfile.json", hosts))


def call_deadline(job: JobSpec) -> float:
    """The deadline of one Step/Evaluate call: past it the worker counts as hung."""
    return job.dist.step_timeout_s
