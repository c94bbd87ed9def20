"""bench/interleave.py: commands run side by side in turns, a command's whole process tree
stops outside its turns, and a command that fails is named."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from bench.interleave import Command, run_in_turns, running_s

# A parent that runs the work in a child (as `orchard train` runs its worker): the child
# spins for 0.4 s of its own running time, noting the wall clock every 5 ms.
WORK = """
import subprocess, sys
child = '''
import sys, time
out, own, last = [], 0.0, time.perf_counter()
while own < 0.4:
    now = time.perf_counter()
    if now - last < 0.05:  # a longer gap: stopped; only the time it ran counts
        own += now - last
    last = now
    if not out or time.time() - out[-1] > 0.005:
        out.append(time.time())
open(sys.argv[1], 'w').write(' '.join(map(repr, out)))
'''
subprocess.run([sys.executable, '-c', child, sys.argv[1]], check=True)
"""


def _command(tmp_path: Path, name: str, code: str = WORK) -> Command:
    argv = [sys.executable, "-c", code, str(tmp_path / f"{name}.times")]
    return Command(argv, tmp_path / f"{name}.log", os.environ, tmp_path)


@pytest.mark.slow
def test_each_tree_runs_only_in_its_own_turns(tmp_path):
    turns = run_in_turns({n: _command(tmp_path, n) for n in ("a", "b")}, turn_s=0.1)
    for name in ("a", "b"):
        stamps = [float(t) for t in (tmp_path / f"{name}.times").read_text().split()]
        own = turns[name]
        assert len(own) >= 3, f"{name} had {len(own)} turns: they did not alternate"
        # a stamp is taken while the child runs: inside one of its turns (a few ms of slack
        # for the signals to land)
        outside = [t for t in stamps if not any(a - 0.01 <= t <= b + 0.01 for a, b in own)]
        assert len(outside) <= 0.05 * len(stamps), (
            f"{name}: {len(outside)} of {len(stamps)} outside"
        )
    first_a, last_a = turns["a"][0][0], turns["a"][-1][1]
    assert running_s(turns["b"], first_a, last_a) > 0.2  # b ran between a's turns


@pytest.mark.slow
def test_a_failing_command_is_named_and_the_others_are_ended(tmp_path):
    bad = _command(tmp_path, "bad", "import sys; sys.exit(3)")
    with pytest.raises(RuntimeError, match=r"bad failed \(exit 3\)"):
        run_in_turns({"good": _command(tmp_path, "good"), "bad": bad}, turn_s=0.05)


def test_running_s_counts_only_the_turns():
    turns = [(0.0, 1.0), (2.0, 3.0)]
    assert running_s(turns, 0.5, 2.5) == pytest.approx(1.0)
    assert running_s(turns, 1.0, 2.0) == 0.0
    assert running_s(turns, -1.0, 5.0) == pytest.approx(2.0)
