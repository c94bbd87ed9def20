"""Measure a worker before planning a run: free memory, matmul speed, round trip, bandwidth.

Round-trip time is the median of a few empty Probe calls; bandwidth comes from one call that
carries a payload, less that round trip. The worker never echoes the payload, so the figure is
the coordinator-to-worker direction (the one that ships models and datasets).
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass

from engine.rpc.server import MAX_MESSAGE_BYTES
from engine.rpc.worker_client import WorkerCallError, WorkerClient

log = logging.getLogger(__name__)

RTT_CALLS = 5
MESSAGE_HEADROOM = 64 * 1024  # the request's other fields and framing


@dataclass(frozen=True)
class ProbeResult:
    free_memory_bytes: int
    matmul_gflops: float
    rtt_ms: float
    bandwidth_mb_s: float  # MB = 10**6 bytes, as network speeds are quoted


def _timed(client: WorkerClient, payload: bytes) -> tuple[float, int]:
    start = time.perf_counter()
    reply = client.probe(payload=payload)
    return time.perf_counter() - start, reply.received_bytes


def probe_worker(
    client: WorkerClient, payload_mb: float = 4, benchmark_s: float = 1.0
) -> ProbeResult:
    """Probe one worker: ~``benchmark_s`` of its compute plus a ``payload_mb`` transfer.

    Raises WorkerCallError (unreachable, wrong protocol version, ...) like every client call.
    """
    size = int(payload_mb * 1e6)
    if not 0 < size <= MAX_MESSAGE_BYTES - MESSAGE_HEADROOM:
        raise ValueError(
            f"payload_mb is {payload_mb}; expected more than 0 and at most "
            f"{(MAX_MESSAGE_BYTES - MESSAGE_HEADROOM) / 1e6:.1f} (the message limit)"
        )
    _timed(client, b"")  # the first call pays for connecting; it is not the link's latency
    rtt_s = statistics.median(_timed(client, b"")[0] for _ in range(RTT_CALLS))
    elapsed, received = _timed(client, bytes(size))
    if received != size:
        raise WorkerCallError(
            client.address, "Probe", None, f"worker received {received} of {size} payload bytes"
        )
    # On a fast link the transfer can hide inside the round trip's noise; never divide by ~0.
    transfer_s = max(elapsed - rtt_s, elapsed / 10)
    info = client.probe(run_benchmark=True, benchmark_s=benchmark_s)
    result = ProbeResult(
        free_memory_bytes=info.free_memory_bytes,
        matmul_gflops=info.matmul_gflops,
        rtt_ms=rtt_s * 1e3,
        bandwidth_mb_s=size / transfer_s / 1e6,
    )
    log.info("probe %s: %s", client.address, result)
    return result
