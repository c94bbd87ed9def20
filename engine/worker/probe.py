"""What a worker can offer right now: free memory and a short fp32 matmul benchmark.

Answers the Probe call, which needs no job: the app asks before it plans a run. The
benchmark is a fixed-size matmul repeated until its time budget, so a slow machine still
answers in about ``benchmark_s`` seconds.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from engine.machine import PROTOCOL_VERSION, free_memory_bytes
from engine.worker import startup
from engine.worker.errors import InvalidRequest, ProtocolMismatch

log = logging.getLogger(__name__)

DEFAULT_BENCHMARK_S = 1.0
MAX_BENCHMARK_S = 10.0  # a caller cannot tie up a worker's cores for longer than this
MATMUL_N = 512
SETTLE_S = 15.0  # the longest a benchmark waits for the worker's start-up imports


@dataclass(frozen=True)
class ProbeReport:
    free_memory_bytes: int
    matmul_gflops: float  # 0.0 when no benchmark ran
    received_bytes: int


def check_protocol(version: str) -> None:
    """Refuse a coordinator that speaks another protocol (an empty version is an Orchard from
    before versions were sent): the message names both sides so the user knows what to update."""
    if version != PROTOCOL_VERSION:
        theirs = repr(version) if version else "none (an Orchard from before protocol versions)"
        raise ProtocolMismatch(
            f"coordinator speaks orchard protocol {theirs}, this worker speaks "
            f"{PROTOCOL_VERSION!r}: update Orchard on one of them"
        )


def matmul_gflops(budget_s: float = DEFAULT_BENCHMARK_S, n: int = MATMUL_N) -> float:
    """fp32 GFLOP/s of an n x n matmul, repeated (each one evaluated) until ``budget_s``."""
    import mlx.core as mx  # lazy: the worker imports mlx only when it computes

    a = mx.random.normal((n, n), dtype=mx.float32)
    b = mx.random.normal((n, n), dtype=mx.float32)
    mx.eval(a @ b)  # warm-up: the first call pays for allocation and kernel set-up
    count = 0
    start = time.perf_counter()
    while True:
        mx.eval(a @ b)
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= budget_s:
            break
    return 2.0 * n**3 * count / elapsed / 1e9


def probe(
    payload_bytes: int,
    run_benchmark: bool,
    benchmark_s: float,
    protocol_version: str,
    settle_s: float = SETTLE_S,
) -> ProbeReport:
    """Answer one Probe request (the version check comes first, as for SetupJob). The
    benchmark first waits up to ``settle_s`` for the worker's start-up imports
    (engine/worker/startup.py), so it measures the machine as a step will find it."""
    check_protocol(protocol_version)
    if not math.isfinite(benchmark_s) or not 0.0 <= benchmark_s <= MAX_BENCHMARK_S:
        raise InvalidRequest(
            f"benchmark_s is {benchmark_s}; expected 0 (the default, "
            f"{DEFAULT_BENCHMARK_S}s) up to {MAX_BENCHMARK_S} seconds"
        )
    gflops = 0.0
    if run_benchmark:
        t0 = time.monotonic()
        if not startup.settle(settle_s):
            log.info("probe: start-up imports still going after %.1fs; benchmarking anyway",
                     settle_s)  # fmt: skip
        elif (waited := time.monotonic() - t0) > 0.05:
            log.info("probe: waited %.1fs for the start-up imports", waited)
        gflops = matmul_gflops(benchmark_s or DEFAULT_BENCHMARK_S)
        log.info("probe: %.1f GFLOP/s fp32 matmul", gflops)
    return ProbeReport(free_memory_bytes(), gflops, payload_bytes)
