"""`orchard worker` on the network, on loopback: TLS + pairing + signed calls, real processes.

An unpaired caller is refused UNAUTHENTICATED; pairing with the code read from the worker's
terminal lets the coordinator in; a different certificate at a paired worker's address, or a
certificate that does not match the advertised fingerprint, is refused.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from engine.cli.pair_cmd import pair_main
from engine.rpc.gen import orchard_pb2, orchard_pb2_grpc
from engine.rpc.paired_auth import PairedCallCredentials
from engine.rpc.paired_client import NotPairedError, connect_paired, split_address
from engine.rpc.tls import fetch_certificate, pinned_channel
from engine.rpc.worker_client import WorkerCallError
from engine.trust import SpoofedPeerError, open_trust_home
from tests.worker.remote_jobs import job_pids, set_up_job, silent_peer
from tests.worker.remote_procs import start_agent

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def agents(tmp_path):
    started = []

    def start(name: str, port: int = 0):
        # no spare: the pairing tests set up no job, and the crash test takes the cold path
        proc, agent = start_agent(
            tmp_path / name, host="127.0.0.1", port=port, extra=("--no-warm-spare",)
        )
        started.append(proc)
        return agent

    yield start
    for p in started:
        p.close()


def _describe(address: str, call_creds: grpc.CallCredentials | None = None) -> grpc.StatusCode:
    host, port = split_address(address)
    cert, _ = fetch_certificate(host, port)
    channel = pinned_channel(address, cert, call_creds)
    try:
        orchard_pb2_grpc.WorkerStub(channel).Describe(orchard_pb2.DescribeRequest(), timeout=10)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()
    finally:
        channel.close()


def test_unpaired_callers_are_refused_and_a_paired_one_gets_in(coordinator_home, agents):
    agent = agents("w1")
    address = f"127.0.0.1:{agent.port}"

    # TLS but no signature; then a signature from a client the worker never paired with.
    assert _describe(address) == grpc.StatusCode.UNAUTHENTICATED
    stranger = PairedCallCredentials("stranger", secrets.token_bytes(32))
    forged = grpc.metadata_call_credentials(stranger, name="forged")
    assert _describe(address, forged) == grpc.StatusCode.UNAUTHENTICATED
    # Plain TCP against the TLS port gets nowhere either.
    plain = grpc.insecure_channel(address)
    with pytest.raises(grpc.RpcError) as e:
        orchard_pb2_grpc.WorkerStub(plain).Describe(orchard_pb2.DescribeRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    plain.close()
    # Health stays open (probes carry no credentials).
    host, port = split_address(address)
    cert, _ = fetch_certificate(host, port)
    health_channel = pinned_channel(address, cert)
    reply = health_pb2_grpc.HealthStub(health_channel).Check(
        health_pb2.HealthCheckRequest(service="orchard.v1.Worker"), timeout=10
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    health_channel.close()

    home = open_trust_home()
    with pytest.raises(NotPairedError, match=f"worker {address} is not paired: run `orchard pair"):
        connect_paired(address, home, timeout_s=10)

    wrong = "0000-0000" if agent.code != "0000-0000" else "1111-1111"
    assert pair_main(address, wrong) == 1  # refused, nothing stored
    assert home.workers().all() == []
    time.sleep(2.5)  # the worker waits 1 s after a wrong code before it takes another
    assert pair_main(address, agent.code) == 0
    client, peer = connect_paired(address, home, timeout_s=10)
    try:
        assert peer.peer_id == agent.worker_id
        assert client.describe()["worker_id"] == agent.worker_id
    finally:
        client.close()


def test_another_certificate_at_a_paired_address_is_refused(coordinator_home, agents):
    first = agents("w1")
    address = f"127.0.0.1:{first.port}"
    assert pair_main(address, first.code) == 0
    pinned_fp = open_trust_home().workers().all()[0].fingerprint
    first.proc.close()

    impostor = agents("impostor", port=first.port)  # same address, its own key
    with pytest.raises(SpoofedPeerError, match="is pinned for it: refusing"):
        connect_paired(address, open_trust_home(), timeout_s=10)
    # An advertisement that copies the paired worker's fingerprint does not help the impostor:
    # pairing checks the certificate it presents against the advertised one, even with its code.
    assert pair_main(address, impostor.code, expected_fingerprint=pinned_fp) == 1
    assert [p.fingerprint for p in open_trust_home().workers().all()] == [pinned_fp]


@pytest.mark.slow  # two job setups in child processes: about 20 s
def test_a_crashed_job_does_not_take_the_worker_down(coordinator_home, agents, tmp_path):
    agent = agents("w1")
    address = f"127.0.0.1:{agent.port}"
    assert pair_main(address, agent.code) == 0
    client, _ = connect_paired(address, open_trust_home(), timeout_s=60)
    sock, silent = silent_peer()
    try:
        # rank 0 of two whose rank 1 never answers: the Step stays in flight
        set_up_job(client, tmp_path / "runs", "crash", peers=[address, silent])
        assert client.describe()["busy"] is True
        pid = job_pids(agent.proc.log_path)[-1]
        with ThreadPoolExecutor(1) as pool:
            step = pool.submit(client.step, 0, 0.01, 120.0)
            time.sleep(1.5)  # the Step reaches the job process and waits on the silent peer
            assert not step.done()
            os.kill(pid, signal.SIGKILL)  # what a segfault or the OOM killer would do
            with pytest.raises(WorkerCallError, match="job process died") as e:
                step.result(timeout=30)
        # a distinct status: the worker is up, its job is gone (not INTERNAL, not a bug)
        assert e.value.code == grpc.StatusCode.ABORTED and e.value.job_lost
        assert e.value.details.startswith("job lost: Step: the job process died (exit code -9)")
        assert not e.value.unreachable
        assert client.describe()["busy"] is False  # the agent lives and knows it is free
        set_up_job(client, tmp_path / "runs", "crash")  # and takes the job again
        assert client.step(0, 0.01).tokens > 0
    finally:
        sock.close()
        client.close()
