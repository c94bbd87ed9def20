"""bench/collectives.py runs end to end and prints one parseable ratio line per case."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(
    r"mode=(\S+) procs=(\d) bytes=(\d+) busbw_ratio_vs_mlx_ring=([\d.e+-]+) latency_ratio_vs_mlx_ring=([\d.e+-]+)"
)


@pytest.mark.slow
def test_bench_quick_prints_a_line_per_case():
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "collectives.py"), "--quick", "--procs", "2", "--sizes", "65536"],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [LINE.fullmatch(line) for line in out.stdout.strip().splitlines()]
    assert all(rows), out.stdout
    modes = {m.group(1) for m in rows}
    assert modes == {"all-reduce", "ring", "reduce-scatter", "parameter-server", "mlx"}
    for m in rows:
        busbw, latency = float(m.group(4)), float(m.group(5))
        assert busbw > 0 and latency == pytest.approx(1 / busbw, rel=0.02)
