"""Run a network worker's job in a child process, so a crashed job never takes the agent down.

The agent keeps the socket, the file cache, pairing and the Collective servicer; the child
holds the model and the TrainingJob. Calls go over a pipe as (name, args) -> ("ok", value) or
("error", exception). Collective pieces that peers push into the agent's mailbox are forwarded
to the child's own mailbox over a second pipe; the child sends to its peers directly. When the
child dies (a segfault in a kernel, the OOM killer), the pending call fails with JobCrashed,
the agent forgets the job and keeps serving: the coordinator can set the job up again.

A child is spawned before its job (engine/worker/spare.py keeps one warm): it imports the
training stack, says "ready" and waits for its build arguments, so SetupJob skips the imports.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from engine.dist.mailbox import MAX_PART_BYTES, Mailbox
from engine.no_torch import keep_torch_out
from engine.worker.errors import JobLost
from engine.worker.memory_guard import MEMORY_EXIT_CODE, exit_message, install_memory_guard

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 15.0


class JobCrashed(JobLost):
    """The job's process died; the worker itself is fine."""


class ForwardingMailbox(Mailbox):
    """The agent's mailbox: checks the group token here, hands pieces to the job's process."""

    def __init__(self) -> None:
        super().__init__()
        self._send_lock = threading.Lock()
        self._conn: Connection | None = None

    def attach(self, conn: Connection | None) -> None:
        with self._send_lock:
            self._conn = conn

    def _forward(self, item: tuple) -> bool:
        with self._send_lock:
            if self._conn is None:
                return False
            try:
                self._conn.send(item)
                return True
            except (OSError, ValueError):  # the job process is gone; its calls report that
                self._conn = None
                return False

    def put(self, op_id: int, src: int, part: int, offset: int, total: int,
            data: bytes | memoryview, dtype: str) -> None:  # fmt: skip
        n = len(data)  # the same checks as Mailbox.put, so the caller hears of a bad piece
        if not 0 <= total <= MAX_PART_BYTES:
            raise ValueError(f"part size {total} outside [0, {MAX_PART_BYTES}]")
        if offset < 0 or offset + n > total:
            raise ValueError(f"piece [{offset}, {offset + n}) does not fit a part of {total} bytes")
        if not self._forward(("put", op_id, src, part, offset, total, bytes(data), dtype)):
            super().put(op_id, src, part, offset, total, data, dtype)

    def fail(self, error: BaseException, token: bytes | None = None) -> None:
        if token is not None and not self.token_ok(token):
            return  # an older group's failure (a regroup since)
        super().fail(error)
        self._forward(("fail", str(error)))

    def set_token(self, token: str) -> None:
        """A regroup: the job's mailbox drops what the old group left, in the order the
        pieces came (the same pipe), so no stale piece reaches the new group."""
        super().set_token(token)
        self._forward(("token", token))


# What a spare child imports ahead of its job (engine.worker.training pulls MLX and mlx-lm).
PRELOAD = ("engine.worker.training", "engine.model.load", "engine.lora.adapters", "engine.data",
           "engine.train", "engine.dist.dist_optimizer", "engine.dist.factory")  # fmt: skip


class Spawned:
    """A job process before its job: spawned, importing (or idle with) the training stack."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")  # never fork a process with gRPC threads
        self.conn, child_conn = ctx.Pipe()
        frames_in, self.frames = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(
            target=_child_main, args=(child_conn, frames_in), name="orchard-job", daemon=True
        )
        self.proc.start()
        child_conn.close()
        frames_in.close()
        self.ready = False

    def wait_ready(self, timeout_s: float) -> bool:
        """True once the child has imported the training stack (tests and benches wait)."""
        if not self.ready and self.conn.poll(timeout_s):
            try:
                status, _ = self.conn.recv()
            except (EOFError, OSError):
                return False
            self.ready = status == "ready"
        return self.ready

    def discard(self) -> None:
        """End an unused child: it holds no job, so nothing is lost."""
        self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()
        self.frames.close()


class ProcessJob:
    """TrainingJob's calls, served by a child process (same methods, same results)."""

    def __init__(self, proc: Any, conn: Connection, mailbox: ForwardingMailbox, setup: Any):
        self.proc, self._conn, self._mailbox, self.setup_result = proc, conn, mailbox, setup
        self._lock = threading.Lock()

    @classmethod
    def start(
        cls, mailbox: ForwardingMailbox, build_args: dict[str, Any], spawned: Spawned | None = None
    ) -> ProcessJob:
        """Build the TrainingJob in ``spawned`` (a warm spare) or a fresh child; raises what
        the build raised."""
        spawned = spawned or Spawned()
        mailbox.attach(spawned.frames)
        job = cls(spawned.proc, spawned.conn, mailbox, None)
        try:
            try:
                spawned.conn.send(("build", (build_args,)))
            except (OSError, ValueError):
                spawned.proc.join(timeout=5)
                raise job._crashed() from None
            job.setup_result = job._wait()
        except BaseException:
            job.close()
            raise
        log.info("job process %d ready", spawned.proc.pid)
        return job

    def _wait(self) -> Any:
        while True:
            while not self._conn.poll(1.0):
                if not self.proc.is_alive():
                    raise self._crashed()
            try:
                status, value = self._conn.recv()
            except (EOFError, OSError):
                self.proc.join(timeout=5)
                raise self._crashed() from None
            if status == "error":
                raise value
            if status != "ready":  # a fresh child's "imported" note precedes its answer
                return value

    def _crashed(self) -> JobCrashed:
        if self.proc.exitcode == MEMORY_EXIT_CODE:  # its memory guard stopped the step
            return JobCrashed(exit_message())
        return JobCrashed(
            f"the job process died (exit code {self.proc.exitcode}); the worker is still up: "
            "set the job up again"
        )

    def _call(self, name: str, *args: Any) -> Any:
        with self._lock:
            try:
                self._conn.send((name, args))
            except (OSError, ValueError):
                self.proc.join(timeout=5)
                raise self._crashed() from None
            return self._wait()

    def describe(self) -> Any:
        return self.setup_result

    def step(self, step: int, lr: float, *split: Any) -> Any:
        return self._call("step", step, lr, *split)

    def evaluate(self, max_batches: int) -> tuple[float, int]:
        return self._call("evaluate", max_batches)

    def get_state(self) -> Any:
        return self._call("get_state")

    def put_state(self, meta: dict[str, Any], tensors: dict[str, Any]) -> int:
        return self._call("put_state", meta, tensors)

    def adapter_files(self) -> Any:
        return self._call("adapter_files")

    def state_meta(self) -> dict[str, Any]:
        return self._call("state_meta")

    def serve_state(self, step: int, params: bool, lo: int, hi: int) -> Any:
        return self._call("serve_state", step, params, lo, hi)

    def take_state(self, meta: dict[str, Any], tensors: dict[str, Any]) -> int:
        return self._call("take_state", meta, tensors)

    def regroup(self, *args: Any) -> Any:
        return self._call("regroup", *args)

    def kill(self) -> None:
        """End the child now (its coordinator is gone): a call waiting on it fails at once
        with JobCrashed, and the memory it held is freed."""
        self._mailbox.attach(None)
        if self.proc.is_alive():
            log.warning("killing job process %d", self.proc.pid)
            self.proc.kill()

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Ask the child to finish; kill it if it does not within ``timeout_s``."""
        self._mailbox.attach(None)
        try:
            self._conn.send(("close", ()))
        except (OSError, ValueError):
            pass
        self.proc.join(timeout=timeout_s)
        if self.proc.is_alive():
            log.warning("job process %d did not stop; killing it", self.proc.pid)
            self.proc.kill()
            self.proc.join(timeout=5)
        self._conn.close()


def _portable(e: BaseException) -> BaseException:
    """The exception itself when it survives pickling (keeps InvalidRequest etc. and their
    gRPC status), else a RuntimeError carrying its type and message."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001 - any pickling failure
        return RuntimeError(f"{type(e).__name__}: {e}")


def _pump_frames(frames: Connection, mailbox: Mailbox) -> None:
    while True:
        try:
            item = frames.recv()
        except (EOFError, OSError):  # the agent dropped the job or died: nothing more comes
            mailbox.fail(RuntimeError("the worker agent ended the job"))
            return
        if item[0] == "put":
            try:
                mailbox.put(*item[1:])
            except ValueError as e:
                log.warning("dropped a collective piece: %s", e)
        elif item[0] == "token":
            mailbox.set_token(item[1])
        else:
            mailbox.fail(RuntimeError(item[1]))


def _child_main(conn: Connection, frames: Connection) -> None:
    keep_torch_out()  # a spawned child starts afresh (engine/no_torch.py)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr,
        format=f"%(asctime)s job[{os.getpid()}] %(levelname)s %(name)s: %(message)s",
    )  # fmt: skip
    import importlib

    failure: BaseException | None = None
    t0 = time.perf_counter()
    try:
        for name in PRELOAD:
            importlib.import_module(name)
        log.info("job process %d imported the training stack in %.1fs", os.getpid(),
                 time.perf_counter() - t0)  # fmt: skip
        conn.send(("ready", os.getpid()))
    except BaseException as e:  # noqa: BLE001 - the build reports it to SetupJob
        failure = _portable(e)
    try:
        name, args = conn.recv()  # idle until a SetupJob takes this process
    except (EOFError, OSError):  # the agent is gone or discarded its spare
        os._exit(0)
    if name != "build":
        os._exit(0)
    build_args = args[0]
    mailbox = Mailbox(build_args["group_token"])
    threading.Thread(target=_pump_frames, args=(frames, mailbox), daemon=True).start()
    try:
        if failure is not None:
            raise failure
        from engine.worker.training import TrainingJob

        install_memory_guard()  # before the model loads: the job's memory has a limit
        args = dict(build_args, mailbox=mailbox, job_dir=Path(build_args["job_dir"]))
        job = TrainingJob.build(**args)
        conn.send(("ok", job.describe()))
    except BaseException as e:  # noqa: BLE001 - every failure goes back to the caller
        conn.send(("error", _portable(e)))
        os._exit(0)
    while True:
        try:
            name, args = conn.recv()
        except (EOFError, OSError):  # the agent is gone
            break
        if name == "close":
            break
        try:
            conn.send(("ok", getattr(job, name)(*args)))
        except BaseException as e:  # noqa: BLE001
            conn.send(("error", _portable(e)))
    job.close()
    logging.shutdown()
    os._exit(0)  # a thread stuck in a collective must not hold the exit
