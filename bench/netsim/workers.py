"""Gradient-sync workers inside the harness: one spawned process per node, entering its
namespace before it opens a socket, syncing real-sized LoRA gradients through the real
engine.dist groups and DistributedAdamW (as the training workers use them), over gRPC on
the node's address. The parent drives them with (command, args) over pipes."""

from __future__ import annotations

import multiprocessing as mp
import secrets
import time
import traceback
from typing import Any

CHOICES = (("all-reduce", "none"), ("ring", "none"), ("reduce-scatter", "none"),
           ("parameter-server", "none"), ("all-reduce", "bf16"), ("reduce-scatter", "bf16"))  # fmt: skip


def _main(rank: int, ns: str | None, ip: str, token: str, conn: Any, cpu_path: str) -> None:
    try:
        if ns:
            from bench.netsim.system import enter_netns

            enter_netns(ns)
        if cpu_path:
            with open(f"{cpu_path}/cgroup.procs", "w") as f:
                f.write("0")  # this process
        import mlx.core as mx
        import numpy as np

        from engine.config import OptimSpec
        from engine.dist.dist_optimizer import DistributedAdamW
        from engine.dist.factory import make_group
        from engine.dist.mailbox import Mailbox
        from engine.rpc.collective_service import serve_collective

        mailbox = Mailbox(token)
        server, port = serve_collective(mailbox, host=ip, max_workers=32)
        conn.send(("port", port))
        peers = conn.recv()
        groups = {
            c: make_group(c[0], rank, peers, token, mailbox, c[1], timeout_s=300, op_space=i + 1)
            for i, c in enumerate(CHOICES)
        }
        conn.send(("ready", None))
        while True:
            cmd, args = conn.recv()
            if cmd == "close":
                break
            mode, codec, params, steps, idle_s = args
            group = groups[(mode, codec)]
            opt = DistributedAdamW(group, mode, OptimSpec(), {"lora": mx.zeros((params,))}, codec)
            grad = mx.array(np.random.default_rng(rank).standard_normal(params).astype(np.float32))
            mx.eval(grad)
            times = []
            for _ in range(steps):
                group.barrier()  # both ranks start the step together
                time.sleep(idle_s)  # the step's compute: the links go idle meanwhile
                t0 = time.perf_counter()
                opt.step({"lora": grad}, 1.0, 100, 1e-4)  # a step consumes its dict
                times.append(time.perf_counter() - t0)
            conn.send(("ok", times))
        for g in groups.values():
            g.close()
        server.stop(0.5)
        conn.send(("ok", None))
    except BaseException:  # noqa: BLE001 - the parent reports it
        conn.send(("error", traceback.format_exc()))


class SyncWorkers:
    """Context manager: one worker per (namespace, address); ``run`` times DistributedAdamW
    steps of ``params`` gradient values in one sync choice and returns seconds per step, the
    slowest rank's."""

    def __init__(self, nodes: list[tuple[str | None, str]], cpu_paths: list[str] | None = None):
        ctx = mp.get_context("spawn")
        token = secrets.token_urlsafe(16)
        self.conns, self.procs = [], []
        for rank, (ns, ip) in enumerate(nodes):
            parent, child = ctx.Pipe()
            cpu = cpu_paths[rank] if cpu_paths else ""
            p = ctx.Process(target=_main, args=(rank, ns, ip, token, child, cpu), daemon=True)
            p.start()
            self.conns.append(parent)
            self.procs.append(p)
        try:
            ports = [self._get(c, 120) for c in self.conns]
            peers = [f"{ip}:{port}" for (_, ip), port in zip(nodes, ports, strict=True)]
            for c in self.conns:
                c.send(peers)
            for c in self.conns:
                self._get(c, 120)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _get(conn: Any, timeout: float) -> Any:
        if not conn.poll(timeout):
            raise TimeoutError(f"sync worker silent for {timeout:.0f}s")
        kind, value = conn.recv()
        if kind == "error":
            raise RuntimeError(f"sync worker failed:\n{value}")
        return value

    def run(self, mode: str, codec: str, params: int, steps: int, idle_s: float) -> list[float]:
        for c in self.conns:
            c.send(("run", (mode, codec, params, steps, idle_s)))
        per_rank = [self._get(c, 600) for c in self.conns]
        return [max(ts) for ts in zip(*per_rank, strict=True)]

    def close(self) -> None:
        for c in self.conns:
            try:
                c.send(("close", None))
            except (OSError, ValueError):
                pass
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)

    def __enter__(self) -> SyncWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
