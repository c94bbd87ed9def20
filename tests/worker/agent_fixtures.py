"""Fixtures for tests that drive real `orchard worker` agents from this test process, which
acts as their paired coordinator (import them into a test module's namespace)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import grpc
import pytest

from engine.cli.pair_cmd import pair_main
from engine.rpc.channel import server_options
from engine.rpc.gen import orchard_pb2
from engine.rpc.paired_client import connect_paired
from engine.trust import open_trust_home
from tests.worker.remote_procs import Agent, start_agent


@pytest.fixture
def coordinator_home(tmp_path, monkeypatch):
    """This test process acts as the coordinator, with its own trust folder."""
    monkeypatch.setenv("ORCHARD_HOME", str(tmp_path / "coord"))
    monkeypatch.delenv("ORCHARD_WORKER_TOKEN", raising=False)
    return tmp_path / "coord"


@pytest.fixture
def paired(tmp_path, coordinator_home):
    """``paired(name, *flags)`` starts an agent, pairs with it and returns (agent, client);
    everything is closed afterwards."""
    started, clients = [], []

    def start(name: str, *flags: str):
        proc, agent = start_agent(tmp_path / name, host="127.0.0.1", extra=flags)
        started.append(proc)
        address = f"127.0.0.1:{agent.port}"
        assert pair_main(address, agent.code) == 0
        client, _ = connect_paired(address, open_trust_home(), timeout_s=120)
        clients.append(client)
        return agent, client

    yield start
    for c in clients:
        c.close()
    for p in started:
        p.close()


@contextmanager
def paired_agent_at(home, lease_s: float | None = None) -> Iterator[tuple[object, str]]:
    """An agent on 127.0.0.1 (with this job lease), paired with the trust folder in
    ORCHARD_HOME (see ``coordinator_home``); yields (its process, its address)."""
    proc, agent = start_agent(home, host="127.0.0.1", job_lease_s=lease_s)
    try:
        address = address_of(agent)
        assert pair_main(address, agent.code) == 0
        yield proc, address
    finally:
        proc.close()


def address_of(agent: Agent) -> str:
    return f"127.0.0.1:{agent.port}"


@contextmanager
def frozen_peer() -> Iterator[tuple[str, threading.Event]]:
    """A peer whose Collective/Push takes the stream and never finishes it, nor sends a part:
    what a frozen (SIGSTOPped) worker looks like from rank 0. Yields its address and an
    event set once a stream reached it (rank 0 has sent its part)."""
    release, reached = threading.Event(), threading.Event()

    def push(frames, context) -> orchard_pb2.CollectiveAck:
        reached.set()
        release.wait(60)  # bounded: the test ends it
        return orchard_pb2.CollectiveAck()

    handler = grpc.method_handlers_generic_handler(
        "orchard.v1.Collective",
        {"Push": grpc.stream_unary_rpc_method_handler(
            push, response_serializer=orchard_pb2.CollectiveAck.SerializeToString
        )},
    )  # fmt: skip
    server = grpc.server(ThreadPoolExecutor(4), handlers=[handler], options=server_options())
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", reached
    finally:
        release.set()
        server.stop(0)
