"""A worker blocked in a collective shuts down in order at once: its shutdown fails the
collective (the Step returns), and the streams to a peer that never answers are cancelled
after a short drain instead of being waited on (the hard-exit timer never has to fire)."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from engine.dist.mailbox import Mailbox
from engine.rpc.collective_client import CLOSE_DRAIN_S, GrpcTransport
from engine.rpc.worker_client import WorkerCallError, WorkerClient
from engine.worker.agent import HARD_EXIT_S
from tests.worker.agent_fixtures import frozen_peer
from tests.worker.remote_jobs import set_up_job

pytestmark = pytest.mark.timeout(120)


def test_close_cancels_a_stream_to_a_peer_that_never_answers():
    with frozen_peer() as (peer, reached):
        transport = GrpcTransport(0, ["127.0.0.1:1", peer], "tok", Mailbox("tok"), timeout_s=5.0)
        transport.send(1, op_id=1, part=0, data=np.ones(4096, np.float32).tobytes(), dtype="f4")
        streams = list(transport._streams.values())
        assert reached.wait(30)  # the stream is open at the peer, which sits on it
        assert len(streams) == 1 and not streams[0].future.done()
        t0 = time.monotonic()
        transport.close()
        took = time.monotonic() - t0
    # cancelled by close itself (a stream left to the channel's close would not say so)
    assert streams[0].future.cancelled()
    assert transport._streams == {} and transport._channels == {}
    print(f"\nclose with a silent peer: {took:.3f}s ({took / CLOSE_DRAIN_S:.1f}x the drain)")


@pytest.mark.slow  # one job set up in a real worker process: ~10 s
@pytest.mark.parametrize("how", ["lifeline", "sigterm"])
def test_a_local_worker_blocked_in_a_collective_exits_in_order_at_once(tmp_path, how):
    from engine.rpc.auth import new_token
    from engine.runtime.local_workers import start_local_worker, stop_local_workers

    token = new_token()
    log_path = tmp_path / "worker.log"
    worker = start_local_worker(token, tmp_path / "data", log_path, timeout_s=60)
    try:
        with (
            frozen_peer() as (peer, reached),
            WorkerClient(worker.address, token, timeout_s=60) as c,
            ThreadPoolExecutor(1) as pool,
        ):
            c.wait_ready(timeout_s=60)
            set_up_job(c, tmp_path / "runs", "blocked", peers=[worker.address, peer])
            step = pool.submit(c.step, 0, 0.01, 120.0)
            assert reached.wait(60), "rank 0 never sent its part"
            time.sleep(0.5)  # it now waits for rank 1's part, which never comes
            assert not step.done(), step.result()
            t0 = time.monotonic()
            if how == "lifeline":
                worker.stdin.close()  # what the engine's death does to the pipe
            else:
                worker.proc.send_signal(signal.SIGTERM)  # what PR_SET_PDEATHSIG sends
            code = worker.proc.wait(timeout=3 * HARD_EXIT_S)
            took = time.monotonic() - t0
            with pytest.raises(WorkerCallError) as e:
                step.result(timeout=30)
    finally:
        if worker.proc.poll() is None:
            stop_local_workers([worker], grace_s=1)
    # 0: the orderly path finished; 3 would be the hard-exit timer firing first
    assert code == 0, log_path.read_text(errors="replace")[-2000:]
    assert "the worker is shutting down" in e.value.details  # the Step itself was ended
    print(f"\n{how}: worker blocked in a collective exited {took:.2f}s after its engine went "
          f"({took / HARD_EXIT_S:.3f} of the {HARD_EXIT_S:g}s hard-exit timer)")  # fmt: skip
