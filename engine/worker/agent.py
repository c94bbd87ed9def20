"""The worker process: serve Worker + Collective on a socket until stopped or orphaned.

``--local`` is how the engine starts workers on its own machine: bind 127.0.0.1 on a free
port, read the per-run token from the first stdin line (never argv: other users can read
argv), announce the port as the first stdout line, and die with the parent (lifeline.py).
Without it, the worker serves the network over TLS with pairing (worker/remote.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from engine.no_torch import keep_torch_out
from engine.rpc.auth import TOKEN_ENV
from engine.rpc.server import serve
from engine.rpc.worker_service import WorkerServicer
from engine.worker import startup
from engine.worker.blas import openblas_loaded, worker_env
from engine.worker.info import worker_info
from engine.worker.job import JobRunner
from engine.worker.lifeline import set_parent_death_signal, start_watchdog
from engine.worker.memory_guard import install_memory_guard

log = logging.getLogger("engine.worker")

PORT_LINE = "ORCHARD_WORKER_PORT="
# A network worker ends a job with no call of its coordinator in flight for this long
# (engine/worker/orphans.py). Generous: the coordinator pauses between calls to write
# checkpoints and to wait for slower workers' SetupJob; WorkerClient.keep_alive renews it.
DEFAULT_JOB_LEASE_S = 300.0
PARENT_PID_ENV = "ORCHARD_PARENT_PID"


def default_data_dir() -> Path:
    return Path(os.environ.get("ORCHARD_HOME", Path.home() / ".orchard")) / "worker"


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 86400 * 7:
        raise argparse.ArgumentTypeError(f"expected seconds in (0, 604800], got {text!r}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="orchard worker", description="Run an Orchard worker.")
    p.add_argument(
        "--local",
        action="store_true",
        help="started by a local engine: 127.0.0.1, free port, token on stdin, exit with the parent",
    )
    p.add_argument(
        "--host",
        default=None,
        help="address to bind (default 127.0.0.1 with --local, else 0.0.0.0)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=None,
        help="port (default: a free port with --local, else 50051; 0 picks a free one)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="cache for files and jobs (default ~/.orchard/worker)",
    )
    p.add_argument(
        "--trust-dir",
        type=Path,
        default=None,
        help="identity, pairing code and paired clients (default ~/.orchard/trust)",
    )
    p.add_argument(
        "--service-type",
        default="",
        help="Bonjour service type (default _orchard._tcp.local.; tests use their own)",
    )
    p.add_argument("--no-advertise", action="store_true", help="do not announce over Bonjour")
    p.add_argument(
        "--job-lease-s",
        type=_positive_seconds,
        default=DEFAULT_JOB_LEASE_S,
        help="network worker: end a job whose coordinator made no call for this many seconds "
        f"(default {DEFAULT_JOB_LEASE_S:g})",
    )
    p.add_argument(
        "--no-warm-spare",
        action="store_true",
        help="network worker: do not keep a job process with the training stack imported "
        "ahead (saves its memory; each SetupJob then imports MLX itself, a few seconds)",
    )
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def read_token(local: bool) -> str:
    """Local: the first stdin line (the engine's per-run token). Else ORCHARD_WORKER_TOKEN."""
    token = os.environ.pop(TOKEN_ENV, "")  # never left for child processes to inherit
    if local:
        line = b""
        while not line.endswith(b"\n"):  # byte by byte: nothing past the token is consumed
            piece = os.read(sys.stdin.fileno(), 1)
            if not piece:
                break
            line += piece
        token = line.decode(errors="replace").strip()
    return token


# An orderly shutdown takes well under 1 s; only a step stuck in MLX's compute waits this out.
HARD_EXIT_S = 10.0
LOCAL_GRACE_S = 0.25  # a local worker's engine is gone or done: no call is worth waiting for


def _parent_gone(reason: str, done: threading.Event) -> None:
    """Shut down in order; if that hangs (a step stuck in MLX), exit hard after HARD_EXIT_S."""
    if not done.is_set():
        log.info("lifeline closed (%s); worker exits", reason)
    done.set()
    timer = threading.Timer(HARD_EXIT_S, lambda: os._exit(3))
    timer.daemon = True
    timer.start()


def _on_stop_signals(done: threading.Event, hard_exit: bool) -> None:
    """SIGTERM/SIGINT end the worker. The handlers only note the signal; a thread acts on it.
    A handler runs on the main thread inside whatever lock call it interrupted, and one that
    set ``done`` itself deadlocked there (seen: a local worker hung after its engine's kill -9).
    ``hard_exit``: SIGTERM also arms the hard-exit timer, as the lifeline does."""
    got: list[int] = []
    signal.signal(signal.SIGTERM, lambda sig, _: got.append(sig))
    signal.signal(signal.SIGINT, lambda sig, _: got.append(sig))

    def watch() -> None:
        while not got:
            time.sleep(0.05)
        if hard_exit and got[0] == signal.SIGTERM:
            _parent_gone("SIGTERM", done)
        else:
            done.set()

    threading.Thread(target=watch, name="stop-signals", daemon=True).start()


def _preload(done: threading.Event) -> None:
    """Import the training stack while the engine ships files: SetupJob then starts at once."""
    import importlib

    t0 = time.perf_counter()
    try:
        for name in ("engine.worker.training", "engine.model.load", "engine.lora.adapters",
                     "engine.data", "engine.train", "engine.dist.dist_optimizer", "engine.dist.factory"):  # fmt: skip
            importlib.import_module(name)
        log.info("imported the training stack in %.1fs", time.perf_counter() - t0)
    except Exception:  # noqa: BLE001 - SetupJob reports import errors with its own message
        log.debug("preload failed", exc_info=True)
    finally:
        done.set()


def main(argv: list[str] | None = None) -> int:
    keep_torch_out()  # before the preload imports transformers (engine/no_torch.py)
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr,
        format=f"%(asctime)s worker[{os.getpid()}] %(levelname)s %(name)s: %(message)s",
    )  # fmt: skip
    if args.local:
        set_parent_death_signal(signal.SIGTERM)
        parent = int(os.environ.get(PARENT_PID_ENV, os.getppid()))
        if os.getppid() != parent:  # the parent died before prctl took effect
            log.error("parent %d is already gone", parent)
            return 3
    data_dir = args.data_dir or default_data_dir()
    if not args.local:
        from engine.worker.remote import serve_remote

        os.environ.pop(TOKEN_ENV, None)  # a network worker trusts pairing, not a shared token
        # job processes are spawned children: they inherit this environment, so they get the
        # OpenBLAS preload that local workers get from the engine (~8x faster on Linux)
        os.environ.update(worker_env(os.environ))
        done = threading.Event()
        _on_stop_signals(done, hard_exit=False)
        # no preload here: the agent's warm spare job process imports the training stack
        code = serve_remote(args, data_dir, done)
        logging.shutdown()  # a handler thread stuck in a collective must not hold the exit
        os._exit(code)
    token = read_token(args.local)
    if not token:
        log.error("no token: set %s or, with --local, send it as the first stdin line", TOKEN_ENV)
        return 2
    done = threading.Event()
    if args.local:
        start_watchdog(
            parent, sys.stdin.fileno(), on_parent_gone=lambda why: _parent_gone(why, done)
        )
    host = args.host or "127.0.0.1"
    port = args.port if args.port is not None else 0
    log.info("OpenBLAS %s", "preloaded" if openblas_loaded() else "not loaded")

    runner = JobRunner(data_dir)
    info = worker_info(f"{os.uname().nodename}-{os.getpid()}")
    server = serve(
        WorkerServicer(runner, runner.store, lambda: info),
        runner.collective_servicer(),
        token,
        host,
        port,
    )
    # The parent reads exactly one line; afterwards stdout goes to stderr so that a library
    # printing to stdout can never fill an unread pipe and block the worker.
    sys.stdout.write(f"{PORT_LINE}{server.port}\n")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    # SIGTERM: the kernel's parent-death signal or the engine's stop; either way the hard
    # exit stands behind the orderly one, as on the lifeline path
    _on_stop_signals(done, hard_exit=True)
    install_memory_guard()  # this process runs the job: past its share of memory, it ends
    preloaded = threading.Event()
    startup.add(preloaded.wait)  # a Probe's benchmark waits for it (engine/worker/startup.py)
    threading.Thread(target=_preload, args=(preloaded,), name="preload", daemon=True).start()
    while not done.wait(0.5):
        pass
    log.info("shutting down")
    runner.close()
    server.stop(grace_s=LOCAL_GRACE_S if args.local else 2.0)
    if args.local:  # a handler thread stuck in a collective must not hold the exit
        logging.shutdown()
        os._exit(0)
    return 0
