"""``python -m engine.service``: the engine process the app (or ``orchard attach``) talks to.

It takes the engine folder's lock (one engine per user), serves the Engine API on the
folder's socket, writes the connection file, prints ``ORCHARD_ENGINE_READY`` once a client
can connect, and lives until it has been idle (no run, no client) for ``--idle-exit-s``, or
a leaving client finds it idle. It runs in a session of its own, so neither a closed
terminal nor a killed app reaches it. SIGTERM/SIGINT stop the run with a checkpoint, then
the process exits; a second signal exits at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from engine.no_torch import keep_torch_out
from engine.rpc.auth import new_token
from engine.rpc.engine_servicer import serve_engine
from engine.service.connection import (
    SOCKET_FILE,
    ConnectionInfo,
    EngineLock,
    engine_dir,
    listen_address,
    remove_connection,
    write_connection,
)
from engine.service.info import ENGINE_PROTOCOL_VERSION
from engine.service.service import IDLE_EXIT_S, EngineService
from engine.trust.files import private_dir

log = logging.getLogger(__name__)

READY_LINE = "ORCHARD_ENGINE_READY"
IDLE_ENV = "ORCHARD_ENGINE_IDLE_EXIT_S"  # the default of --idle-exit-s (tests shorten it)
EXIT_LOCKED = 4  # another engine holds the folder's lock
TICK_S = 0.25


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m engine.service", description=__doc__)
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="engine folder (default: $ORCHARD_ENGINE_DIR, else ~/.orchard/engine)",
    )
    parser.add_argument("--idle-exit-s", type=float, default=None,
                        help=f"exit after this long with no run and no client (default ${IDLE_ENV} or {IDLE_EXIT_S:.0f})")  # fmt: skip
    parser.add_argument(
        "--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )
    args = parser.parse_args(argv)
    if args.idle_exit_s is None:
        raw = os.environ.get(IDLE_ENV, "")
        try:
            args.idle_exit_s = float(raw) if raw else IDLE_EXIT_S
        except ValueError:
            parser.error(f"{IDLE_ENV}={raw!r}: expected a number of seconds")
    if args.idle_exit_s < 0:
        parser.error(f"--idle-exit-s {args.idle_exit_s}: expected 0 or more seconds")
    return args


def _preload() -> None:
    """Import the coordinator (MLX, the runtime) while no run waits on it."""
    try:
        import engine.runtime.run_handle  # noqa: F401 - the package itself loads lazily
    except Exception:  # noqa: BLE001 - a start reports import errors with its own message
        log.debug("preload failed", exc_info=True)


def _on_signals(service: EngineService, done: threading.Event) -> None:
    def handler(signum: int, frame: object) -> None:
        if done.is_set():
            os._exit(1)
        log.warning("signal %d: stopping the run with a checkpoint, then exiting", signum)
        done.set()
        service.stop(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def main(argv: list[str] | None = None) -> int:
    keep_torch_out()  # before the preload imports transformers (engine/no_torch.py)
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr,
        format=f"%(asctime)s engine[{os.getpid()}] %(levelname)s %(name)s: %(message)s",
    )  # fmt: skip
    folder = private_dir((args.dir or engine_dir()).expanduser())
    lock = EngineLock(folder)
    if not lock.acquire():
        log.info("another engine holds %s; leaving it to serve", lock.path)
        return EXIT_LOCKED
    service = EngineService(idle_exit_s=args.idle_exit_s)
    (folder / SOCKET_FILE).unlink(missing_ok=True)  # a dead engine's socket (we hold the lock)
    key = new_token()
    server, address = serve_engine(service, listen_address(folder), key)
    write_connection(
        folder,
        ConnectionInfo(address, key, os.getpid(), ENGINE_PROTOCOL_VERSION, service.started_at),
    )
    done = threading.Event()
    _on_signals(service, done)
    # The launcher reads one line; afterwards stdout goes to the log (stderr), so nothing
    # written later can block on a pipe whose reader (the app) is gone.
    sys.stdout.write(READY_LINE + "\n")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    log.info(
        "engine ready on %s (folder %s, idle exit after %.0fs)", address, folder, args.idle_exit_s
    )
    threading.Thread(target=_preload, name="preload", daemon=True).start()
    while True:
        if done.wait(TICK_S):
            if service.wait_run(TICK_S):
                break
        elif service.should_exit() and service.close_if_idle():
            break
    log.info("engine exiting")
    remove_connection(folder, os.getpid())
    server.stop(1.0).wait(2.0)
    (folder / SOCKET_FILE).unlink(missing_ok=True)
    lock.release()
    logging.shutdown()
    os._exit(0)  # a daemon thread (a stuck worker call) must not hold the exit
