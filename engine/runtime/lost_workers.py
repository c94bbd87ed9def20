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
from pathlib import Path

from engine.events import SHOWN, StateEvent
from engine.rpc.worker_client import WorkerCallError
from engine.runtime.full_state import from_survivors, split
from engine.runtime.recovery import WorkerLost
from engine.train.checkpoint import list_checkpoints

log = logging.getLogger("engine.runtime.coordinator")  # one logger for the run's lines

REPLACEMENT_WAIT_S = 120.0  # with every worker lost, how long to wait for one to come back


class RegroupRefused(RuntimeError):
    """The survivors' state cannot be trusted to go on in place (they disagree on the step)."""


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

    def _recover(self, lost: WorkerLost, failed_step: int, began: float, done: int) -> int:
        """Re-form the group without the lost workers; returns the step to continue from.
        ``done``: steps completed when the loss was seen. The survivors keep their job and
        state (Regroup): only the interrupted step is redone. Where that cannot be (mlx, the
        parameter server lost, a worker without Regroup, survivors that disagree), every
        worker sets the job up again and the run restarts from the last snapshot. Raises
        RunHalted past dist.max_failures."""
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
            elif not (mlx or server_lost) and self._regroup(done):
                return self._regrouped(what, lost, failed_step, done, detect_s, t0)
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

    def _regroup(self, done: int) -> bool:
        """The survivors go on with their loaded jobs in the smaller group (Regroup); each
        must be at step ``done``. ZeRO-1: the moment shards are cut again from the
        survivors' shards and, for the lost ones, the last snapshot. False (every survivor's
        job stopped): set the group up again instead."""
        job, cluster, snap = self.job, self.cluster, self.snapshot
        assert cluster is not None and snap is not None
        self._regroup_info = {}
        try:
            replies = cluster.regroup()
            at = sorted({int(r["step"]) for r in replies})
            if at != [done]:
                raise RegroupRefused(f"the survivors are at steps {at}, the run at step {done}")
            if job.dist.mode == "reduce-scatter":
                full, stale = from_survivors(cluster.get_states(done), snap)
                cluster.put_states(split(full, job.dist.mode, cluster.size))
                if stale and snap.step < done:  # else the snapshot is of this very step
                    self._regroup_info["moments_from_snapshot"] = stale
                    self._regroup_info["snapshot_step"] = snap.step
        except (WorkerCallError, RegroupRefused, ValueError) as e:
            self._note(f"the survivors cannot go on in place ({e}): setting the job up again",
                       "warning")  # fmt: skip
            cluster.stop_jobs(list(range(cluster.size)), "regroup failed: setting up again")
            return False
        self._regroup_info["regroup_s"] = max(float(r["regroup_s"]) for r in replies)
        b = self.balancer
        if b is not None and b.addresses != cluster.addresses:
            self._note(b.regroup(cluster.addresses, done))
        return True

    def _regrouped(self, what: str, lost: WorkerLost, failed_step: int, done: int,
                   detect_s: float, t0: float) -> int:  # fmt: skip
        """Report a regroup; returns the step to go on from (nothing before it is redone)."""
        cluster, info = self.cluster, self._regroup_info
        assert cluster is not None
        took = time.perf_counter() - t0
        redo = (f"redoing the interrupted step {done + 1} only" if done <= failed_step
                else "nothing to redo")  # fmt: skip
        stale = ""
        if "moments_from_snapshot" in info:
            stale = (f"; ZeRO-1: {info['moments_from_snapshot']} moment values of the lost "
                     f"shard come from the step-{info['snapshot_step']} snapshot")  # fmt: skip
        msg = (f"{what}; group re-formed with {cluster.size} workers in {took:.2f}s, the "
               f"survivors keeping their loaded model and state (no reload); {redo}{stale} "
               f"(failure {self.failures} of at most {self.job.dist.max_failures})")  # fmt: skip
        self._note(msg, "warning", running={
            "recovered": True, "regrouped": True, "lost": lost.addresses,
            "detected_at": lost.detected_at, "detect_s": detect_s, "redo_from": done,
            "failed_step": failed_step + 1, "steps_redone": max(0, failed_step + 1 - done),
            "workers": cluster.size, "failures": self.failures, "recover_s": took, **info,
        })  # fmt: skip
        return done

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
