"""Errors the worker raises for a caller's mistakes; the gRPC layer maps them to status codes."""

from __future__ import annotations


class WorkerError(Exception):
    """Base class: the message names what was wrong and what was expected."""


class InvalidRequest(WorkerError):
    """Bad input from the caller (a path in a file name, a wrong hash): INVALID_ARGUMENT."""


class OutOfOrder(WorkerError):
    """A call that needs an earlier one first (Step before SetupJob): FAILED_PRECONDITION."""


class ProtocolMismatch(OutOfOrder):
    """The coordinator speaks another orchard protocol version: FAILED_PRECONDITION, since
    no retry helps until one side is updated."""
