"""Worker.PullState over real gRPC: a worker takes its state from a peer of its group (the
peer's Collective.FetchState, under the group token), and every way that can fail is named
and leaves the worker as it was. Three workers in this process (real JobRunners, servers and
stories260K jobs), so each case costs a few calls, not process starts."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest

from engine.dist.shards import shard_bounds
from engine.rpc.auth import new_token
from engine.rpc.worker_client import WorkerCallError, WorkerClient
from engine.runtime.full_state import FullState, gather, split
from engine.runtime.join_plan import plan_pulls
from engine.runtime.shipped_files import files_to_ship
from engine.worker.files import sha256_file
from tests.runtime.helpers import tiny_job

STEP = 5


@dataclass
class Worker:
    runner: Any
    server: Any
    client: WorkerClient

    @property
    def address(self) -> str:
        return self.client.address


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    from engine.rpc.server import serve
    from engine.rpc.worker_service import WorkerServicer
    from engine.worker.info import worker_info
    from engine.worker.job import JobRunner

    root, token = tmp_path_factory.mktemp("pull"), new_token()
    info = worker_info("test-pull")
    workers = []
    for r in range(3):
        runner = JobRunner(root / f"w{r}")
        server = serve(WorkerServicer(runner, runner.store, lambda: info),
                       runner.collective_servicer(), token)  # fmt: skip
        workers.append(Worker(runner, server, WorkerClient(f"127.0.0.1:{server.port}", token)))
    job = tiny_job(root / "runs", 10)
    files = {role: (p, sha256_file(p)) for role, p in files_to_ship(job, remote=False).items()}
    for w in workers:
        for path, digest in files.values():
            w.client.put_file(path, digest)
    yield workers, job, {role: d for role, (_, d) in files.items()}
    for w in workers:
        w.client.close()
        w.runner.close()
        w.server.stop(0)


def _known(n: int) -> FullState:
    rng = np.random.default_rng(3)
    p, m, v = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
    return FullState(step=STEP, params=p, m=m, v=np.abs(v), adam_step=STEP, opt_steps=STEP)


def _group(trio, mode: str) -> tuple[list[Worker], int, FullState, str]:
    """Ranks 0 and 1 hold a known state of step STEP; rank 2 has just set the job up.
    Returns the workers, the trainable parameters, that state and the group token."""
    workers, job, files = trio
    job.dist.mode = mode
    peers, token = [w.address for w in workers], new_token()
    with ThreadPoolExecutor(3) as pool:
        infos = list(pool.map(lambda r: workers[r].client.setup_job(
            job.to_toml(), r, 3, peers, "pull", files, token), range(3)))  # fmt: skip
    n = int(infos[0]["trainable_params"])
    full = _known(n)
    for r, state in enumerate(split(full, mode, 3)[:2]):
        workers[r].client.put_state(*state)
    return workers, n, full, token


def _state(w: Worker) -> tuple[dict, dict]:
    return w.client.get_state(STEP)


def _same(a: tuple[dict, dict], b: tuple[dict, dict]) -> None:
    assert a[0] == b[0]
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        np.testing.assert_array_equal(a[1][k], b[1][k], err_msg=k)


@pytest.fixture(scope="module")
def all_reduce(trio):
    return _group(trio, "all-reduce")


def test_a_newcomer_takes_a_peers_state_worker_to_worker(trio):
    workers, n, full, _ = _group(trio, "all-reduce")
    before = _state(workers[0])
    reply = workers[2].client.pull_state(STEP, 0, [(1, 0, n)])  # parameters of 0, moments of 1
    assert reply["step"] == STEP and reply["received_bytes"] == 3 * 4 * n
    meta, tensors = _state(workers[2])
    want_meta, want = split(full, "all-reduce", 3)[2]
    assert (meta["step"], meta["steps"], meta["adam_step"]) == (STEP, STEP, STEP)
    for k in ("params", "m", "v"):
        np.testing.assert_array_equal(tensors[k], want[k], err_msg=k)
    _same(_state(workers[0]), before)  # the peer served it and changed nothing


def _refused(w: Worker, *args: Any) -> WorkerCallError:
    with pytest.raises(WorkerCallError) as e:
        w.client.pull_state(*args)
    return e.value


def test_a_peer_at_another_step_is_named_and_nothing_changes(all_reduce):
    workers, n, _, _ = all_reduce
    before = workers[2].client.get_state(0)
    e = _refused(workers[2], STEP - 1, 0, [(0, 0, n)])
    assert e.code == grpc.StatusCode.FAILED_PRECONDITION
    assert f"peer rank 0 ({workers[0].address})" in e.details, e.details
    assert (
        f"state is of step {STEP}, not {STEP - 1}" in e.details
        and "nothing was changed" in e.details
    )
    _same(workers[2].client.get_state(0), before)


def test_a_bad_request_or_a_peer_of_another_group_is_refused_and_nothing_changes(all_reduce):
    workers, n, _, token = all_reduce
    newcomer = workers[2]
    before = newcomer.client.get_state(0)
    e = _refused(newcomer, STEP, 7, [(0, 0, n)])
    assert e.code == grpc.StatusCode.INVALID_ARGUMENT and "params_from: rank 7" in e.details
    e = _refused(newcomer, STEP, 0, [(0, 0, n // 2), (1, n // 2 + 1, n)])
    assert e.code == grpc.StatusCode.INVALID_ARGUMENT and "does not go on from" in e.details
    e = _refused(newcomer, STEP, -1, [(0, 0, n)])  # its own parameters are of step 0
    assert e.code == grpc.StatusCode.FAILED_PRECONDITION and "own state is of step 0" in e.details
    # rank 1 moves to another group (a new token): it no longer serves this one
    workers[1].client.regroup(0, 1, [workers[1].address], new_token())
    try:
        e = _refused(newcomer, STEP, 1, [(1, 0, n)])
        assert e.code == grpc.StatusCode.FAILED_PRECONDITION, e
        assert f"peer rank 1 ({workers[1].address}): PERMISSION_DENIED" in e.details
        assert "wrong group token" in e.details
    finally:
        workers[1].client.regroup(1, 3, [w.address for w in workers], token)
    _same(newcomer.client.get_state(0), before)


def test_a_peer_that_is_gone_is_named_and_nothing_changes(all_reduce):
    """Rank 1's address is one where nothing answers any more (a worker that ended)."""
    from engine.rpc.server import serve

    workers, n, _, token = all_reduce
    gone = serve(None, None, new_token())
    dead = f"127.0.0.1:{gone.port}"
    gone.stop(0)
    newcomer, peers = workers[2], [w.address for w in workers]
    newcomer.client.regroup(2, 3, [peers[0], dead, peers[2]], token)
    try:
        before = newcomer.client.get_state(0)
        e = _refused(newcomer, STEP, 1, [(1, 0, n)])
        assert e.code == grpc.StatusCode.FAILED_PRECONDITION
        assert f"peer rank 1 ({dead}): UNAVAILABLE" in e.details, e.details
        assert "nothing was changed" in e.details
        _same(newcomer.client.get_state(0), before)
    finally:
        newcomer.client.regroup(2, 3, peers, token)


def test_zero1_shards_are_cut_again_worker_to_worker_as_a_worker_joins(trio):
    """Ranks 0 and 1 hold ZeRO-1 shards for two; rank 2 joins: all three regroup and each
    takes only the part of its new shard it did not hold, from the peer that held it."""
    workers, job, files = trio
    job.dist.mode = "reduce-scatter"
    peers, token = [w.address for w in workers[:2]], new_token()
    with ThreadPoolExecutor(3) as pool:
        infos = list(pool.map(lambda r: workers[r].client.setup_job(
            job.to_toml(), r, 2, peers, "pull", files, token), range(2)))  # fmt: skip
    n = int(infos[0]["trainable_params"])
    full = _known(n)
    for r, state in enumerate(split(full, "reduce-scatter", 2)):
        workers[r].client.put_state(*state)
    peers, token = [w.address for w in workers], new_token()
    workers[2].client.setup_job(job.to_toml(), 2, 3, peers, "pull", files, token)
    for r in range(2):
        workers[r].client.regroup(r, 3, peers, token)
    pulls = plan_pulls("reduce-scatter", n, 2, 3)
    with ThreadPoolExecutor(3) as pool:  # at once: each serves its old shard while it re-cuts
        calls = {r: pool.submit(workers[r].client.pull_state, STEP, pulls[r].params_from,
                                pulls[r].moments) for r in pulls}  # fmt: skip
        replies = {r: f.result() for r, f in calls.items()}
    states = [_state(w) for w in workers]
    for r, (meta, _) in enumerate(states):
        assert (meta["lo"], meta["hi"]) == shard_bounds(n, 3)[r] and meta["step"] == STEP
    back = gather(states)
    for k in ("params", "m", "v"):
        np.testing.assert_array_equal(getattr(back, k), getattr(full, k), err_msg=k)
    old, new = shard_bounds(n, 2), shard_bounds(n, 3)
    for r in range(2):  # a survivor received only what its old shard did not hold
        kept = max(0, min(old[r][1], new[r][1]) - max(old[r][0], new[r][0]))
        assert replies[r]["received_bytes"] == 2 * 4 * (new[r][1] - new[r][0] - kept)
    assert replies[2]["received_bytes"] == 4 * n + 2 * 4 * (new[2][1] - new[2][0])


@pytest.mark.slow  # two agents, each job in its own process: about 7 s
@pytest.mark.timeout(240)
def test_between_paired_agents_over_pinned_tls_with_each_job_in_its_own_process(paired, tmp_path):
    """Network workers: the pull goes to the peer's agent over TLS pinned to the certificate
    the coordinator gave (SetupJob.peer_certs), and its job process serves the state."""
    from engine.rpc.paired_client import connect_paired
    from engine.trust import open_trust_home

    with ThreadPoolExecutor(2) as pool:  # both pairings at once, into one trust folder
        clients = [client for _, client in pool.map(paired, ["agent0", "agent1"])]
    certs = []
    for c in clients:
        again, peer = connect_paired(c.address, open_trust_home(), timeout_s=60)
        again.close()
        certs.append(peer.cert_pem)
    job = tiny_job(tmp_path / "runs", 10, **{"dist.workers": 2})
    files = {}
    for role, path in files_to_ship(job, remote=True).items():
        files[role] = sha256_file(path)
        name = role.split("/", 1)[1] if role.startswith("model/") else path.name
        for c in clients:
            c.put_file(path, files[role], name=name)
    peers, token = [c.address for c in clients], new_token()
    with ThreadPoolExecutor(2) as pool:
        infos = list(pool.map(lambda r: clients[r].setup_job(
            job.to_toml(), r, 2, peers, "pull", files, token, peer_certs=certs), range(2)))  # fmt: skip
    n = int(infos[0]["trainable_params"])
    full = _known(n)
    clients[0].put_state(*split(full, "all-reduce", 2)[0])
    # a pin that is not the peer's (rank 0 pinned to rank 1's certificate): TLS refuses
    clients[1].regroup(1, 2, peers, token, peer_certs=[certs[1], certs[1]])
    before = clients[1].get_state(0)
    with pytest.raises(WorkerCallError) as e:
        clients[1].pull_state(STEP, 0, [(0, 0, n)])
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert f"peer rank 0 ({peers[0]}): UNAVAILABLE" in e.value.details, e.value.details
    _same(clients[1].get_state(0), before)
    clients[1].regroup(1, 2, peers, token, peer_certs=certs)
    reply = clients[1].pull_state(STEP, 0, [(0, 0, n)])
    assert reply["step"] == STEP and reply["received_bytes"] == 3 * 4 * n
    meta, tensors = clients[1].get_state(STEP)
    want = split(full, "all-reduce", 2)[1][1]
    assert (meta["step"], meta["steps"], meta["adam_step"]) == (STEP, STEP, STEP)
    for k in ("params", "m", "v"):
        np.testing.assert_array_equal(tensors[k], want[k], err_msg=k)
