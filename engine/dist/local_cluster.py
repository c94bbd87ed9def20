"""Run a function on N local ranks, each a spawned process with its own collective server.

For tests and benchmarks (real processes, real sockets on 127.0.0.1): each child binds a
port, the parent hands everyone the full peer list, each child builds its Group and calls
``fn(group, *args)``; results come back by rank. Bounded by ``timeout_s``; every child is
killed on the way out, whatever happens.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import secrets
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)


def _child(rank: int, n: int, mode: str, compression: str, token: str, fn: Callable[..., Any],
           args: Sequence[Any], env: dict[str, str], up: Any, down: Any, group_kwargs: dict[str, Any]) -> None:  # fmt: skip
    import os

    os.environ.update(env)
    try:
        from engine.dist.factory import make_group
        from engine.dist.mailbox import Mailbox
        from engine.rpc.collective_service import serve_collective

        mailbox = Mailbox(token)
        server, port = serve_collective(mailbox)
        up.put(("port", rank, port))
        peers = down.get(timeout=60)
        group = make_group(
            mode, rank, peers, token, mailbox, compression, timeout_s=60.0, **group_kwargs
        )
        ctx = {"rank": rank, "peers": peers, "token": token, "mailbox": mailbox, "port": port}
        result = fn(group, ctx, *args)
        group.close()
        up.put(("ok", rank, result))
        server.stop(0.5)
    except BaseException:  # report everything: the parent must not wait out the timeout
        up.put(("error", rank, traceback.format_exc()))


def run_local(
    n: int,
    fn: Callable[..., Any],
    *args: Any,
    mode: str = "all-reduce",
    compression: str = "none",
    timeout_s: float = 120.0,
    env: Sequence[dict[str, str]] | None = None,
    **group_kwargs: Any,
) -> list[Any]:
    """``[fn(group, ctx, *args) for each rank]``, run in ``n`` spawned processes.

    ``group_kwargs`` go to :func:`engine.dist.factory.make_group` (chunk_bytes, one_shot_bytes)."""
    spawn = mp.get_context("spawn")
    up = spawn.Queue()
    downs = [spawn.Queue() for _ in range(n)]
    token = secrets.token_urlsafe(16)
    envs = list(env) if env is not None else [{} for _ in range(n)]
    procs = [
        spawn.Process(
            target=_child,
            args=(r, n, mode, compression, token, fn, args, envs[r], up, downs[r], group_kwargs),
            daemon=True,
        )
        for r in range(n)
    ]
    deadline = time.monotonic() + timeout_s
    try:
        for p in procs:
            p.start()
        ports: dict[int, int] = {}
        results: dict[int, Any] = {}
        while len(results) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"run_local: {n} ranks did not finish within {timeout_s:.0f}s")
            try:
                kind, rank, value = up.get(timeout=min(left, 1.0))
            except queue.Empty:
                dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"run_local: rank(s) {dead} exited early") from None
                continue
            if kind == "error":
                raise RuntimeError(f"run_local: rank {rank} failed:\n{value}")
            if kind == "port":
                ports[rank] = value
                if len(ports) == n:
                    peers = [f"127.0.0.1:{ports[r]}" for r in range(n)]
                    for q in downs:
                        q.put(peers)
            else:
                results[rank] = value
        return [results[r] for r in range(n)]
    finally:
        for p in procs:
            p.join(timeout=max(0.1, min(5.0, deadline - time.monotonic())))
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
