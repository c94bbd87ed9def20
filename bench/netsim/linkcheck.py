"""Measure a shaped link as a user would: TCP goodput of one bulk stream (iperf-style) and
the median round trip of small TCP messages (ping-style, TCP_NODELAY). Each end runs in a
spawned process that enters its node's namespace first."""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import statistics
import time
from dataclasses import dataclass

from bench.netsim.system import enter_netns

PORT = 5201


@dataclass(frozen=True)
class LinkMeasure:
    rate_mbit: float
    rtt_ms: float
    rtt_p90_ms: float


def _realtime(on: bool) -> None:
    """Round trips are measured at real-time priority: they then time the link, not how
    long a loaded box takes to schedule the two Python ends (seen: 8 ms measured as 11.7)."""
    if on:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(5))
    else:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def _server(ns: str, host: str, ready, pings: int) -> None:
    enter_netns(ns)
    _realtime(True)
    with socket.create_server((host, PORT)) as srv:
        ready.set()
        conn, _ = srv.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(pings):
                conn.sendall(conn.recv(64) or b"x")
            _realtime(False)
            buf = bytearray(1 << 20)
            total = 0
            while n := conn.recv_into(buf):
                total += n
            conn.sendall(total.to_bytes(8, "big"))


def _client(ns: str, host: str, nbytes: int, pings: int, out) -> None:
    enter_netns(ns)
    _realtime(True)
    with socket.create_connection((host, PORT), timeout=60) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rtts = []
        for _ in range(pings):
            t0 = time.perf_counter()
            s.sendall(b"p" * 32)
            s.recv(64)
            rtts.append(time.perf_counter() - t0)
        _realtime(False)
        chunk = b"\0" * (1 << 20)
        t0 = time.perf_counter()
        sent = 0
        while sent < nbytes:
            s.sendall(chunk)
            sent += len(chunk)
        s.shutdown(socket.SHUT_WR)
        got = int.from_bytes(s.recv(8), "big")  # the receiver has everything
        dt = time.perf_counter() - t0
    rtts = sorted(rtts[3:])  # the first few pay for slow start and ARP
    out.put((got * 8 / dt / 1e6, statistics.median(rtts) * 1e3, rtts[int(0.9 * len(rtts))] * 1e3))


def measure_link(net, a: int, b: int, nbytes: int = 64 << 20, pings: int = 40) -> LinkMeasure:
    """Goodput from node ``a`` to node ``b`` and their round-trip time."""
    ctx = mp.get_context("spawn")
    ready, out = ctx.Event(), ctx.Queue()
    dst = net.nodes[b]
    srv = ctx.Process(target=_server, args=(dst.ns, dst.ip, ready, pings), daemon=True)
    srv.start()
    try:
        if not ready.wait(30):
            raise TimeoutError("link check: the server did not start")
        cli = ctx.Process(
            target=_client, args=(net.nodes[a].ns, dst.ip, nbytes, pings, out), daemon=True
        )
        cli.start()
        rate, rtt, p90 = out.get(timeout=300)
        cli.join(10)
        return LinkMeasure(rate, rtt, p90)
    finally:
        for p in (srv,):
            p.join(5)
            if p.is_alive():
                p.kill()
