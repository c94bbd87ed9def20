"""Per-run token authentication for gRPC calls.

A worker runs whatever a caller asks, so every call must carry the run's secret. The server
side is an interceptor that aborts with UNAUTHENTICATED before any servicer code runs; the
client side adds the token as call metadata. The standard health service stays open: it
reveals nothing and probes call it without credentials. Collective calls come from peer
workers, which hold the run's group token (sent in SetupJob over this authenticated channel)
but not each other's worker tokens, so the Collective servicer checks that group token on
every chunk instead (see ``PEER_METHOD_PREFIXES``).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Any

import grpc

log = logging.getLogger(__name__)

TOKEN_HEADER = "x-orchard-token"
TOKEN_ENV = "ORCHARD_WORKER_TOKEN"
HEALTH_METHOD_PREFIXES: tuple[str, ...] = ("/grpc.health.v1.Health/",)
PEER_METHOD_PREFIXES: tuple[str, ...] = ("/orchard.v1.Collective/",)
OPEN_METHOD_PREFIXES = HEALTH_METHOD_PREFIXES + PEER_METHOD_PREFIXES


def new_token() -> str:
    """A fresh random secret for one run (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


def token_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Metadata to pass as ``metadata=`` on a client call."""
    return ((TOKEN_HEADER, token),)


def _abort_handler(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same streaming shape as ``handler`` that only aborts."""

    def abort(request: Any, context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


class CheckingInterceptor(grpc.ServerInterceptor):
    """Aborts with UNAUTHENTICATED every call (outside ``open_prefixes``) whose metadata
    ``_problem`` finds fault with. Subclasses say only what a good call carries."""

    def __init__(self, open_prefixes: Sequence[str]):
        self._open = tuple(open_prefixes)

    def _problem(self, method: str, meta: dict[str, Any]) -> str:
        raise NotImplementedError

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        handler = continuation(handler_call_details)
        if handler is None or method.startswith(self._open):
            return handler
        problem = self._problem(method, dict(handler_call_details.invocation_metadata or ()))
        if problem:
            log.warning("refused %s: %s", method, problem)
            return _abort_handler(handler, f"{method}: {problem}")
        return handler


class TokenInterceptor(CheckingInterceptor):
    """Rejects every call whose ``x-orchard-token`` metadata does not match ``token``."""

    def __init__(self, token: str, open_prefixes: Sequence[str] = OPEN_METHOD_PREFIXES):
        if not token:
            raise ValueError("TokenInterceptor: the token must not be empty")
        super().__init__(open_prefixes)
        self._token = token.encode()

    def _problem(self, method: str, meta: dict[str, Any]) -> str:
        sent = meta.get(TOKEN_HEADER)
        if sent is None:
            return f"missing {TOKEN_HEADER} metadata"
        sent_b = sent.encode() if isinstance(sent, str) else bytes(sent)
        return "" if hmac.compare_digest(sent_b, self._token) else "wrong token"
