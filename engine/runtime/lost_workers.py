"""What the coordinator does when workers are lost (a mixin of Coordinator).

A lost worker: the survivors regroup in place (engine/rpc Regroup: their loaded model, data
and optimizer state stay; only the interrupted step is redone), or, where they cannot (mlx,
the parameter server lost, an old worker, survivors at different steps), every worker sets
the job up again and the run goes on from the last in-memory snapshot. A worker that comes
back joins between two steps (engine/runtime/returning_workers.py). docs/reliability.md
rows 9-11.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from engine.events import SHOWN, StateEvent
from engine.rpc.worker_client import WorkerCallError
from engine.runtime.balance import Split
from engine.runtime.full_state import from_survivors, split
from engine.runtime.recovery import WorkerLost
from engine.train.checkpoint import list_checkpoints

log = logging.getLogger("engine.runtime.coordinator")  # one logger for the run's lines

REPLACEMENT_WAIT_S = 120.0  # with every worker lost, how long to wait for one to come back
SURVIVOR_REPLY_WAIT_S = 10.0  # survivors past the interrupted step: their replies are on the way


@dataclass
class FinishedStep:
    """A Step the survivors finished though a worker was lost in it (its part of the
    collective had gone out): their replies, the step's split over them, its time."""

    outs: list  # the survivors' StepResults, in their new rank order
    plan: Split
    dt: float


class RegroupRefused(RuntimeError):
    """The group's state cannot be trusted to go on in place (its workers disagree on the step)."""


class RunHalted(RuntimeError):
    """The run cannot go on (too many lost workers, none left); its checkpoint is intact."""


def checkpoint_note(run_dir: Path | None) -> str:
    """What a halted or stopped run still has on disk, in a sentence."""
    found = list_checkpoints(run_dir) if run_dir else []
    if not found:
        return "No checkpoint was written yet."
    return f"Its last checkpoint ({found[0].name}) is intact: resume it to go on."


class LostWorkers:
    """Recovery and rejoin steps of :class:`~engine.runtime.coordinator.Coordinator`; they
    use its cluster, snapshot, balancer and event stream."""

    def _recover(self, lost: WorkerLost, failed_step: int, began: float, done: int,
                 plan: Split) -> int:  # fmt: skip
        """Re-form the group without the lost workers; returns the step to continue from.
        ``done``: steps completed when the loss was seen; ``plan``: the interrupted step's
        split. The survivors keep their job and state (Regroup): only the interrupted step is
        redone, or none where they finished it (then self.finished_step holds their replies
        of it, for the run loop to take as step ``done``'s), or, where they disagree on the
        step, those since the last snapshot. Where that cannot be (mlx, the parameter server
        lost, a worker without Regroup), every worker sets the job up again and the run
        restarts from the last snapshot. Raises RunHalted past dist.max_failures."""
        job, cluster, snap = self.job, self.cluster, self.snapshot
        assert cluster is not None and snap is not None
        self.failures += 1
        detect_s = max(0.0, lost.detected_at - began)
        what = (f"worker {', '.join(lost.addresses)} lost during step {failed_step + 1} "
                f"({lost.cause}); detected {detect_s:.2f}s into the step")  # fmt: skip
        log.warning("%s", what, extra=SHOWN)
        kept = checkpoint_note(self.run_dir)
        if self.failures > job.dist.max_failures:
            raise RunHalted(f"{what}. That is failure {self.failures}, more than dist.max_failures="
                            f"{job.dist.max_failures}: the run stopped. {kept}")  # fmt: skip
        if job.dist.mode == "mlx" and cluster.remote and cluster.token:
            raise RunHalted(f"{what}. dist.mode 'mlx' cannot re-form on workers reached with a "
                            f"shared token: they run MLX in their own process, which a survivor "
                            f"stuck in MLX's collective cannot leave (paired `orchard worker` "
                            f"agents can: each job is a process of its own). {kept}")  # fmt: skip
        if cluster.size - len(lost.ranks) < 1 and not job.dist.rejoin:
            raise RunHalted(f"{what}. No worker is left. {kept}")
        t0 = time.perf_counter()
        self.emit(StateEvent("recovering", what, str(self.run_dir),
                             {"lost": lost.addresses, "detected_at": lost.detected_at, "step": failed_step + 1}))  # fmt: skip
        mlx = job.dist.mode == "mlx"
        server_lost = job.dist.mode == "parameter-server" and 0 in lost.ranks
        set_up = False  # the group's workers have the job set up already
        if mlx and cluster.local:  # MLX's group re-forms in new processes
            back = len(lost.ranks) if job.dist.rejoin else 0  # the lost come back at once
            cluster.restart_local(cluster.size - len(lost.ranks) + back)
            self._files = cluster.ship_files()
        else:
            survivors = [r for r in range(cluster.size) if r not in lost.ranks]
            if mlx or server_lost:  # survivors stuck in MLX's collective: their agents kill
                # those job processes; SetupJob starts fresh ones. The server: its state is gone
                cluster.stop_jobs(survivors, "a peer was lost")
            gone = cluster.drop(lost.ranks)
            if self.rejoiner is not None:
                self.rejoiner.departed(gone)
            if not cluster.size:  # nobody left: wait (bounded) for a worker to come back
                set_up = self._wait_for_replacement(what, kept)
            elif (
                not (mlx or server_lost)
                and (go_on := self._regroup(done, lost, failed_step, plan)) is not None
            ):
                self._regrouped(what, lost, failed_step, go_on, detect_s, t0)
                # a step the survivors finished: the run loop takes it from self.finished_step
                return go_on - (self.finished_step is not None)
        if not set_up:
            self._setup_group()
        cluster.put_states(split(snap, job.dist.mode, cluster.size))
        msg = (f"{what}; group re-formed with {cluster.size} workers in {time.perf_counter() - t0:.1f}s; "
               f"redoing steps {snap.step + 1}..{failed_step + 1} from the step-{snap.step} state "
               f"(failure {self.failures} of at most {job.dist.max_failures})")  # fmt: skip
        self._note(msg, "warning", running={
            "recovered": True, "lost": lost.addresses, "detected_at": lost.detected_at,
            "detect_s": detect_s, "redo_from": snap.step, "failed_step": failed_step + 1,
            "steps_redone": failed_step + 1 - snap.step, "workers": cluster.size, "failures": self.failures,
        })  # fmt: skip
        return snap.step

    def _regroup(self, done: int, lost: WorkerLost, failed_step: int, plan: Split) -> int | None:
        """The survivors go on with their loaded jobs in the smaller group (Regroup); each at
        step ``done``, or every one past the interrupted Step: the lost worker died after
        its part of the collective went out, so they finished it with the whole group's
        gradients, and their replies of it are the step's (self.finished_step). Survivors
        that disagree (one finished the step, another failed sending to the lost worker)
        all take the last snapshot's state instead, still without reloading anything.
        ZeRO-1 in place: the moment shards are cut again from the survivors' shards and, for
        the lost ones, the last snapshot. Returns the step the run has reached; None (every
        survivor's job stopped): set the group up again instead."""
        job, cluster, snap = self.job, self.cluster, self.snapshot
        assert cluster is not None and snap is not None
        self._regroup_info, finished = {}, None
        try:
            replies = cluster.regroup()
            at = sorted({int(r["step"]) for r in replies})
            if at == [done + 1] and failed_step == done:
                finished = self._survivors_step(lost, done, plan)
            if finished is not None or at == [done]:
                reached = done + (finished is not None)
                if job.dist.mode == "reduce-scatter":
                    full, stale = from_survivors(cluster.get_states(reached), snap)
                    cluster.put_states(split(full, job.dist.mode, cluster.size))
                    if stale and snap.step < reached:  # else the snapshot is of this very step
                        self._regroup_info["moments_from_snapshot"] = stale
                        self._regroup_info["snapshot_step"] = snap.step
            else:
                reached = snap.step
                cluster.put_states(split(snap, job.dist.mode, cluster.size))
                self._regroup_info["survivors_at"] = at
        except (WorkerCallError, ValueError) as e:
            self._note(f"the survivors cannot go on in place ({e}): setting the job up again",
                       "warning")  # fmt: skip
            cluster.stop_jobs(list(range(cluster.size)), "regroup failed: setting up again")
            return None
        self.finished_step = finished
        self._regroup_info["regroup_s"] = max(float(r["regroup_s"]) for r in replies)
        b = self.balancer
        if b is not None and b.addresses != cluster.addresses:
            self._note(b.regroup(cluster.addresses, reached))
        return reached

    def _survivors_step(self, lost: WorkerLost, step: int, plan: Split) -> FinishedStep | None:
        """The survivors' replies of the Step they finished without the lost worker's reply;
        None (logged) where they cannot stand for the whole group's step."""
        outs = lost.survivor_results(SURVIVOR_REPLY_WAIT_S)
        totals = {(o.group_loss_sum, o.group_tokens) for o in outs or ()}
        if not outs or any(o.step != step for o in outs):
            why = "not all of their replies of it came"
        elif len(totals) != 1 or outs[0].group_tokens <= 0:  # a worker without group_* says 0
            why = f"they do not report the same group loss of it: {sorted(totals)}"
        else:
            kept = [r for r in range(len(plan.shares)) if r not in lost.ranks]
            survivors_plan = Split(tuple(plan.shares[r] for r in kept),
                                   tuple(plan.micro_batches[r] for r in kept))  # fmt: skip
            # the step's time as the slowest survivor measured it (its compute and the
            # collective time it waited for): the coordinator's clock saw the loss, not the end
            dt = max(o.compute_s + max(0.0, o.comm_s - o.comm_hidden_s) for o in outs)
            return FinishedStep(outs, survivors_plan, dt)
        log.info(
            "the survivors finished step %d, but %s: going on from the snapshot", step + 1, why
        )
        return None

    def _regrouped(self, what: str, lost: WorkerLost, failed_step: int, reached: int,
                   detect_s: float, t0: float) -> None:  # fmt: skip
        """Report a regroup at step ``reached`` (nothing before it is redone)."""
        cluster, info = self.cluster, self._regroup_info
        assert cluster is not None
        took = time.perf_counter() - t0
        if reached > failed_step + 1:
            redo = "nothing to redo"
        elif reached == failed_step + 1:
            redo = (f"nothing to redo: the survivors finished step {reached} (the lost "
                    f"worker's part of it had gone out)")  # fmt: skip
        elif "survivors_at" in info:
            redo = (f"the survivors ended at steps {info['survivors_at']}, so they take the "
                    f"step-{reached} snapshot and redo steps {reached + 1}..{failed_step + 1}")  # fmt: skip
        else:
            redo = f"redoing the interrupted step {reached + 1} only"
        stale = ""
        if "moments_from_snapshot" in info:
            stale = (f"; ZeRO-1: {info['moments_from_snapshot']} moment values of the lost "
                     f"shard come from the step-{info['snapshot_step']} snapshot")  # fmt: skip
        msg = (f"{what}; group re-formed with {cluster.size} workers in {took:.2f}s, the "
               f"survivors keeping their loaded model and state (no reload); {redo}{stale} "
               f"(failure {self.failures} of at most {self.job.dist.max_failures})")  # fmt: skip
        self._note(msg, "warning", running={
            "recovered": True, "regrouped": True, "lost": lost.addresses,
            "detected_at": lost.detected_at, "detect_s": detect_s, "redo_from": reached,
            "failed_step": failed_step + 1, "steps_redone": max(0, failed_step + 1 - reached),
            "workers": cluster.size, "failures": self.failures, "recover_s": took, **info,
        })  # fmt: skip

    def _wait_for_replacement(self, what: str, kept: str) -> bool:
        """Every worker is gone; go on only once one is back (restarted, or answering).
        True: those that came back were set up ahead and regrouped (no second SetupJob);
        False: set them up."""
        assert self.rejoiner is not None and self.cluster is not None
        deadline = time.monotonic() + REPLACEMENT_WAIT_S
        while not (back := self.rejoiner.ready()):
            if time.monotonic() > deadline or self.stop_event.is_set():
                raise RunHalted(f"{what}. No worker is left, and none came back within "
                                f"{REPLACEMENT_WAIT_S:.0f}s. {kept}")  # fmt: skip
            time.sleep(0.2)
        self.cluster.add(back)
        if all(m.prepared_s for m in back) and self._regroup_newcomers(list(range(len(back)))):
            b = self.balancer
            if b is not None and b.addresses != self.cluster.addresses:
                self._note(b.regroup(self.cluster.addresses, self.snapshot.step))
            return True
        self._files = self.cluster.ship_files()
        return False
