"""`orchard status` and `orchard attach`: the engine process's run, seen from a terminal.

``status`` prints one line about the engine and its run. ``attach`` replays the run's history
and follows it live with the same progress line as ``orchard train``, until the run ends;
Ctrl-C detaches (the run goes on), ``--stop`` first asks it to stop with a checkpoint.
Neither starts an engine: with none running they say so and exit 1.
"""

from __future__ import annotations

import sys

from engine.cli.progress import TerminalProgress
from engine.service.info import RunInfo, RunMark

EXIT_CODES = {"finished": 0, "stopped": 130}  # anything else (failed) is 1, as orchard train


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def describe_run(run: RunInfo | None) -> str:
    if run is None:
        return "no run yet"
    where = run.run_dir or run.resume_from or "(no folder yet)"
    going = "training" if run.active else "ended"
    return f"{going}: {run.state}, step {run.step} of {run.total_steps}, {where}"


def _client():
    from engine.service.connection import engine_dir
    from engine.service.launcher import find_engine

    client = find_engine()
    if client is None:
        _out(f"no Orchard engine is running ({engine_dir()})")
    return client


def status_main() -> int:
    client = _client()
    if client is None:
        return 1
    s = client.status()
    _out(f"engine pid {s.pid} at {client.address}, {s.clients} attached; {describe_run(s.run)}")
    client.close()
    return 0


def attach_main(stop: bool = False) -> int:
    """Follow the engine's run until it ends; the exit code is orchard train's for its end."""
    from engine.rpc.engine_client import EngineUnavailable

    client = _client()
    if client is None:
        return 1
    if stop and client.stop_run("orchard attach --stop"):
        _out("stopping at the next step boundary, with a checkpoint")
    view = TerminalProgress()
    stream = client.watch("orchard-attach", history=True)
    run: RunInfo | None = None
    try:
        for item in stream:
            if type(item) is not RunMark:
                view(item)  # type: ignore[arg-type]
                continue
            run = item.run or run
            if item.change == "attached":
                _out(f"attached to the engine (pid {client.status().pid}); {describe_run(run)}")
            ended_before = item.change == "history_end" and (run is None or not run.active)
            if item.change == "ended" or ended_before:
                break
    except KeyboardInterrupt:
        _out("detached; the run goes on (orchard attach to follow it again)")
        return 0
    except EngineUnavailable as e:
        _out(f"lost the engine: {e}")
        return 1
    finally:
        stream.cancel()
        client.close()
    if run is None:
        _out("the engine has no run to follow")
        return 1
    _out(f"run folder: {run.run_dir}")
    return EXIT_CODES.get(run.state, 1)
