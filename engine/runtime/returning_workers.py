"""What the coordinator does when lost workers come back (a mixin of Coordinator).

A worker that is back (engine/runtime/rejoin.py found it) is set up while the group trains
on (files, model, data: as a group of one), and joins between two steps with the group's
current state, so nothing is redone and the group stops only for that state: all Regroup
into the new group, keeping their loaded model, and the newcomer takes the current step's
state from one of the others, worker to worker (Worker.PullState, which reads the peer's
Collective.FetchState under the group token); the coordinator only says which peer holds
which part (engine/runtime/join_plan.py) and no state passes through it. ZeRO-1 cuts the
moments by world size, so there every worker re-cuts its shard the same way, taking from
its peers only what it did not hold. A worker that could not be set up ahead sets up at
the join.

Where that cannot be (a worker of an older Orchard, a peer that fails or is at another step)
the coordinator relays the state: it reads the others' (GetState) and sends it (PutState),
setting the job up again where a worker could not regroup. A worker that cannot join at all
is left out again and the run goes on. mlx joins from the coordinator's snapshot, as before:
MLX's group re-forms in fresh processes. docs/reliability.md row 9.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from engine.rpc.worker_client import WorkerCallError
from engine.runtime.cluster import Member
from engine.runtime.full_state import FullState, from_survivors, split
from engine.runtime.join_plan import plan_pulls
from engine.runtime.lost_workers import RegroupRefused
from engine.runtime.recovery import WorkerLost

log = logging.getLogger("engine.runtime.coordinator")  # one logger for the run's lines


class ReturningWorkers:
    """Rejoin steps of :class:`~engine.runtime.coordinator.Coordinator`; they use its
    cluster, snapshot, balancer and event stream."""

    # How a returning worker gets its state: from a peer, or (False) from this coordinator's
    # fresh snapshot of every worker, sent to every worker, as mlx does; bench/rejoin.py
    # measures one against the other.
    peer_state = True

    def _rejoin(self, back: list[Member], step: int) -> None:
        """Workers that came back join between two steps with the group's state of ``step``
        (nothing is redone); one that fails to join is left out again."""
        if self.job.dist.mode == "mlx" or not self.peer_state:
            return self._rejoin_from_snapshot(back, step)
        cluster = self.cluster
        assert cluster is not None and self.run_dir is not None
        t0 = time.perf_counter()
        before, token = cluster.size, cluster.group_token
        prepared = all(m.prepared_s for m in back)  # set up while the group trained on
        cluster.add(back)
        names = [m.client.address for m in back]
        new = list(range(before, cluster.size))
        try:
            if not (prepared and self._regroup_newcomers(new)):
                self._files = cluster.ship_files()
                cluster.setup(self._files, self.run_dir.name, ranks=new)
        except Exception as e:  # noqa: BLE001 - a newcomer that fails must not end the run
            cluster.leave_out(before, token)  # the others never changed: their group goes on
            self._note(f"worker {', '.join(names)} could not rejoin: {e}", "warning")
            return
        setup_s = time.perf_counter() - t0
        try:
            replies = cluster.regroup(list(range(before)))
            at = sorted({int(r["step"]) for r in replies})
            if at != [step]:
                raise RegroupRefused(f"the workers in the group are at steps {at}, the run at "
                                     f"step {step}")  # fmt: skip
        except (WorkerCallError, RegroupRefused) as e:
            how = self._relay_state(before, step, names, e, set_up=True)
        else:
            try:
                how = self._pull_from_peers(before, step)
            except WorkerCallError as e:
                how = self._relay_state(before, step, names, e, set_up=False)
        if how is None:
            return  # left out again (said so)
        b = self.balancer
        if b is not None and b.addresses != cluster.addresses:
            self._note(b.regroup(cluster.addresses, step))
        took = time.perf_counter() - t0
        msg = (f"worker {', '.join(names)} rejoined after step {step}: {cluster.size} workers "
               f"(re-formed in {took:.1f}s, nothing redone; {how.pop('said')})")  # fmt: skip
        prepare_s = max(m.prepared_s for m in back)
        self._note(msg, running={"rejoined": names, "step": step, "workers": cluster.size,
                                 "rejoin_s": took, "setup_s": setup_s, "state_s": took - setup_s,
                                 "prepared": prepared, "prepare_s": prepare_s,
                                 "back_at": _back_at(back), **how})  # fmt: skip

    def _regroup_newcomers(self, new: list[int]) -> bool:
        """Newcomers set up ahead (as groups of one) go on in the group at their ranks.
        False (one could not, e.g. its job ended while it waited): set them up now."""
        assert self.cluster is not None
        try:
            self.cluster.regroup(new)
        except WorkerCallError as e:
            log.warning("a worker set up ahead cannot join as it is (%s): setting it up", e)
            return False
        return True

    def _pull_from_peers(self, before: int, step: int) -> dict[str, Any]:
        """Each worker that needs it takes its state from its peers (PullState): the
        newcomers; in ZeRO-1 every worker (its moment shard is cut again)."""
        cluster, mode = self.cluster, self.job.dist.mode
        assert cluster is not None and self.snapshot is not None
        n = self.snapshot.params.size  # trainable parameters (any snapshot has them all)
        pulls = plan_pulls(mode, n, before, cluster.size)
        replies = cluster.pull_states(pulls, step, state_bytes=12 * n)  # params, m, v
        moved = sum(int(r["received_bytes"]) for r in replies)
        sources = sorted({p for r, pull in pulls.items() if r >= before for p in pull.peers(r)})
        kept = "parameters (ZeRO-1 shards re-cut)" if mode == "reduce-scatter" else "state"
        said = (f"the others kept their loaded model and {kept}; the newcomers took theirs "
                f"from worker {', '.join(cluster.addresses[r] for r in sources)}, worker to "
                f"worker ({moved / 2**20:.1f} MiB moved)")  # fmt: skip
        return {"said": said, "state": "peer", "state_bytes": moved,
                "pulled": sorted(pulls), "put_state": []}  # fmt: skip

    def _relay_state(self, before: int, step: int, names: list[str], why: Exception,
                     set_up: bool) -> dict[str, Any] | None:  # fmt: skip
        """The state through this coordinator: the group's (GetState from the workers that
        were in it), sent to those that need it (PutState); ``set_up``: the others could not
        regroup, so every worker sets the job up again first. None: the newcomers could not
        join even so and were left out again (the others go on from the same state)."""
        cluster, mode = self.cluster, self.job.dist.mode
        assert cluster is not None
        new = list(range(before, cluster.size))
        log.warning("the state cannot go worker to worker (%s): the coordinator relays it", why)
        full = self._state_of_group(before, step)
        try:
            if set_up:
                self._setup_group()
            ranks = None if set_up or mode == "reduce-scatter" else new
            states = split(full, mode, cluster.size)
            cluster.put_states(states, ranks)
        except Exception as e:  # noqa: BLE001 - a newcomer that fails must not end the run
            self._note(f"worker {', '.join(names)} could not rejoin: {e}", "warning")
            cluster.drop(new)
            if set_up or not self._back_in_place(step):
                self._setup_group()
            cluster.put_states(split(full, mode, cluster.size))
            return None
        put = list(range(cluster.size)) if ranks is None else ranks
        moved = _state_bytes(split(full, mode, before)) + _state_bytes([states[r] for r in put])
        said = "the coordinator relayed the state" + (
            ", every worker set up again" if set_up else "; the others kept their loaded model"
        )
        return {"said": said, "state": "coordinator", "state_bytes": moved, "put_state": put}

    def _back_in_place(self, step: int) -> bool:
        """The newcomers left again: the others regroup as they were, keeping their loaded
        model (PutState follows). False: set them up again."""
        assert self.cluster is not None
        try:
            at = sorted({int(r["step"]) for r in self.cluster.regroup()})
        except WorkerCallError as e:
            log.warning("the group cannot go on in place (%s): setting it up again", e)
            return False
        return at == [step]

    def _state_of_group(self, before: int, step: int) -> FullState:
        """The state of ``step`` held by ranks below ``before`` (the group before the
        newcomers). A worker of them that is gone ends the rejoin as a lost worker."""
        cluster = self.cluster
        assert cluster is not None and self.snapshot is not None
        try:
            states = cluster.some_ranked(range(before), lambda _r, c: c.get_state(step))
        except WorkerCallError as e:
            lost = [r for r in range(before) if not cluster.reachable(r)]
            cluster.drop(list(range(before, cluster.size)))  # the newcomers go again
            if lost:
                raise WorkerLost(lost, [cluster.addresses[r] for r in lost], time.time(),
                                 f"lost while a worker rejoined: {e}") from None  # fmt: skip
            raise
        at = sorted({int(meta["step"]) for meta, _ in states})
        if at != [step]:
            raise RuntimeError(f"the workers are at steps {at}, the run at step {step}")
        return from_survivors(states, self.snapshot)[0]

    def _regroup_in_place(self, before: int, step: int) -> bool:
        """The workers already in the group regroup with the newcomers (set up already),
        keeping their loaded model. False where that cannot be (a worker without Regroup,
        one at another step): set every worker up."""
        cluster = self.cluster
        assert cluster is not None
        try:
            at = sorted({int(r["step"]) for r in cluster.regroup(list(range(before)))})
        except WorkerCallError as e:
            log.warning("the group cannot take its newcomers in place (%s): setting every "
                        "worker up again", e)  # fmt: skip
            return False
        if at != [step]:
            log.warning("workers at steps %s, the run at %d: setting every worker up again",
                        at, step)  # fmt: skip
            return False
        b = self.balancer
        if b is not None and b.addresses != cluster.addresses:
            self._note(b.regroup(cluster.addresses, step))
        return True

    def _rejoin_from_snapshot(self, back: list[Member], step: int) -> None:
        """The coordinator's path (mlx, or ``peer_state`` off): a fresh snapshot of every
        worker's state, then the newcomers set up and the others regroup (mlx: every worker
        sets up again), and PutState gives every worker that snapshot."""
        job, cluster = self.job, self.cluster
        assert cluster is not None and self.run_dir is not None
        t0 = time.perf_counter()
        try:
            self._take_snapshot(step)
        except WorkerLost:
            for m in back:
                cluster.discard(m)
            raise
        before = cluster.size
        cluster.add(back)
        names = [m.client.address for m in back]
        setup_s = 0.0
        try:
            t1 = time.perf_counter()
            self._files = cluster.ship_files()
            in_place = job.dist.mode != "mlx"  # MLX's group re-forms in fresh processes
            if in_place:
                cluster.setup(
                    self._files, self.run_dir.name, ranks=list(range(before, cluster.size))
                )
            setup_s = time.perf_counter() - t1
            in_place = in_place and self._regroup_in_place(before, step)
            if not in_place:
                self._setup_group()
            states = split(self.snapshot, job.dist.mode, cluster.size)
            cluster.put_states(states)
        except Exception as e:  # noqa: BLE001 - a newcomer that fails must not end the run
            self._note(f"worker {', '.join(names)} could not rejoin: {e}", "warning")
            cluster.drop(list(range(before, cluster.size)))
            self._setup_group()
            cluster.put_states(split(self.snapshot, job.dist.mode, cluster.size))
            return
        took = time.perf_counter() - t0
        moved = _state_bytes(split(self.snapshot, job.dist.mode, before)) + _state_bytes(states)
        msg = (f"worker {', '.join(names)} rejoined after step {step}: {cluster.size} workers "
               f"(re-formed in {took:.1f}s, nothing redone"
               f"{'; the others kept their loaded model' if in_place else ''}; the state came "
               f"from the coordinator's snapshot)")  # fmt: skip
        self._note(msg, running={
            "rejoined": names, "step": step, "workers": cluster.size, "rejoin_s": took,
            "setup_s": setup_s, "state_s": took - setup_s, "back_at": _back_at(back),
            "state": "snapshot", "state_bytes": moved, "put_state": list(range(cluster.size)),
        })  # fmt: skip


def _state_bytes(states: list[tuple[dict, dict]]) -> int:
    """Bytes of tensors in these per-worker states (what a GetState or PutState carries)."""
    return sum(int(np.asarray(t).nbytes) for _, tensors in states for t in tensors.values())


def _back_at(back: list[Member]) -> float:
    """When the first of these workers answered again (0: unknown)."""
    return min((m.ready_at for m in back if m.ready_at), default=0.0)
