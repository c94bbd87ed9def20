"""A client of the engine process: every call has a deadline; Watch yields plain data.

Errors come out as two kinds: ``EngineUnavailable`` (no engine answers at that address: it
exited, or is exiting) and ``EngineRefused`` (it answered no: busy, a bad job), each with
the engine's message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc

from engine.events import Event
from engine.rpc.auth import token_metadata
from engine.rpc.engine_servicer import OPTIONS
from engine.rpc.engine_wire import event_from_pb, run_from_pb, status_from_pb
from engine.rpc.gen import engine_pb2 as pb
from engine.rpc.gen import engine_pb2_grpc
from engine.service.info import EngineStatus, RunInfo, RunMark

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 10.0
GONE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED)


class EngineUnavailable(ConnectionError):
    """No engine answered (it is not running, or it exited)."""


class EngineRefused(RuntimeError):
    """The engine answered with a refusal: ``code`` is the gRPC status name."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def _translate(e: grpc.RpcError) -> Exception:
    code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
    text = (e.details() if hasattr(e, "details") else "") or str(code)
    if code in GONE:
        return EngineUnavailable(f"the engine process does not answer: {text}")
    return EngineRefused(code.name, text)


class WatchStream:
    """The items of one Watch: engine events and RunMarks, in order. ``cancel()`` ends it
    from another thread; iteration then stops quietly."""

    def __init__(self, call: grpc.Call):
        self._call = call
        self.cancelled = False

    def __iter__(self) -> Iterator[Event | RunMark]:
        try:
            for batch in self._call:
                for m in batch.events:
                    item = event_from_pb(m)
                    if item is not None:
                        yield item
        except grpc.RpcError as e:
            if self.cancelled:
                return
            raise _translate(e) from None

    def cancel(self) -> None:
        self.cancelled = True
        self._call.cancel()


class EngineClient:
    def __init__(self, address: str, key: str, timeout_s: float = CALL_TIMEOUT_S):
        self.address = address
        self._meta = token_metadata(key)
        self._timeout = timeout_s
        self._channel = grpc.insecure_channel(address, options=OPTIONS)
        self._stub = engine_pb2_grpc.EngineStub(self._channel)

    def _call(self, method: str, request: object, timeout_s: float | None = None) -> object:
        try:
            return getattr(self._stub, method)(
                request, timeout=timeout_s or self._timeout, metadata=self._meta
            )
        except grpc.RpcError as e:
            raise _translate(e) from None

    def status(self, timeout_s: float | None = None) -> EngineStatus:
        return status_from_pb(self._call("Status", pb.StatusRequest(), timeout_s))  # type: ignore[arg-type]

    def start_run(self, job_toml: str, resume_from: str = "", client: str = "") -> RunInfo:
        request = pb.StartRunRequest(job_toml=job_toml, resume_from=resume_from, client=client)
        return run_from_pb(self._call("StartRun", request))  # type: ignore[arg-type]

    def stop_run(self, reason: str = "") -> bool:
        """True when a run was going and now stops at its next step boundary."""
        return self._call("StopRun", pb.StopRunRequest(reason=reason)).stopping  # type: ignore[attr-defined]

    def release(self, client: str, timeout_s: float | None = None) -> bool:
        """Say this client leaves; True when the engine exits now (idle)."""
        reply = self._call("Release", pb.ReleaseRequest(client=client), timeout_s)
        return reply.exiting  # type: ignore[attr-defined]

    def watch(self, client: str, history: bool = True) -> WatchStream:
        """History of the current run (when ``history``), then live events; no deadline."""
        call = self._stub.Watch(
            pb.WatchRequest(client=client, history=history), metadata=self._meta
        )
        return WatchStream(call)

    def close(self) -> None:
        self._channel.close()
