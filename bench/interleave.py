"""Run commands side by side in turns: one computes while the others are stopped (SIGSTOP).

On a shared machine whose speed swings 2-3x within a minute, two commands timed one after
the other see different machines. Here each command (with every process it started, found
through /proc) runs for a turn of ``turn_s`` seconds while the others are stopped, round
robin, so all of them sample the same load at that grain; each one's time is the sum of its
own turns, from spawn to exit. A duration a command measures itself (a step time) spans the
others' turns too: :func:`running_s` gives the part of a wall-clock span that was its own.
Linux only (/proc, SIGSTOP/SIGCONT).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Command:
    argv: list[str]
    log: Path  # stdout and stderr go here
    env: Mapping[str, str]
    cwd: Path


def _children(pid: int) -> list[int]:
    """The child pids of ``pid`` (of every one of its threads)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:  # it exited meanwhile
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as f:
                out.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return out


def _stop_tree(root: int) -> list[int]:
    """SIGSTOP ``root`` and its descendants, each parent before its children are listed (a
    stopped parent starts no child the walk then misses); returns the pids stopped. A
    stopped tree starts nothing, so SIGCONT to these pids resumes all of it."""
    stopped, todo = [], [root]
    while todo:
        pid = todo.pop()
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            continue
        stopped.append(pid)
        todo.extend(_children(pid))
    return stopped


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


Turns = list[tuple[float, float]]  # (start, end) of each running turn, time.time() clock


def running_s(turns: Turns, start: float, end: float) -> float:
    """Seconds of ``[start, end]`` (time.time() clock) that fell in the command's turns."""
    return sum(max(0.0, min(end, b) - max(start, a)) for a, b in turns)


def run_in_turns(commands: Mapping[str, Command], turn_s: float = 0.5) -> dict[str, Turns]:
    """Run every command to its end in turns; returns each one's running turns (their
    lengths sum to its time). Raises RuntimeError naming the command and its log when one
    exits non-zero."""
    procs: dict[str, subprocess.Popen] = {}
    stopped: dict[str, list[int]] = {}
    files = []
    try:
        for name, c in commands.items():
            f = open(c.log, "w", encoding="utf-8")  # noqa: SIM115 - closed in finally
            files.append(f)
            procs[name] = subprocess.Popen(
                c.argv, stdout=f, stderr=subprocess.STDOUT, env=dict(c.env), cwd=c.cwd,
                start_new_session=True,
            )  # fmt: skip
            if len(procs) > 1:  # the first one runs first
                stopped[name] = _stop_tree(procs[name].pid)
        turns: dict[str, Turns] = {name: [] for name in procs}
        order = list(procs)
        current, t0 = order[0], time.time()
        while order:
            try:
                procs[current].wait(timeout=turn_s)
                ended = True
            except subprocess.TimeoutExpired:
                ended = False
            nxt = order[(order.index(current) + 1) % len(order)]
            if ended:
                turns[current].append((t0, time.time()))
                order.remove(current)
                if procs[current].returncode != 0:
                    raise RuntimeError(
                        f"{current} failed (exit {procs[current].returncode}); "
                        f"see {commands[current].log}"
                    )
                if not order:
                    break
                nxt = nxt if nxt in order else order[0]
            elif nxt == current:
                continue  # the last one left runs on: its turn goes on
            else:
                # a turn ends once its tree is stopped, and the next one starts before its
                # tree is resumed: no running moment falls outside the command's turns
                stopped[current] = _stop_tree(procs[current].pid)
                turns[current].append((t0, time.time()))
            t0 = time.time()
            _signal_all(stopped.pop(nxt, []), signal.SIGCONT)
            current = nxt
        return turns
    finally:
        for p in procs.values():
            if p.poll() is None:
                _signal_all(_stop_tree(p.pid), signal.SIGKILL)
                p.wait()
        for f in files:
            f.close()
