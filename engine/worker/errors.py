"""Errors the worker raises for a caller's mistakes; the gRPC layer maps them to status codes."""

from __future__ import annotations


class WorkerError(Exception):
    """Base class: the message names what was wrong and what was expected."""


class InvalidRequest(WorkerError):
    """Bad input from the caller (a path in a file name, a wrong hash): INVALID_ARGUMENT."""


class OutOfOrder(WorkerError):
    """A call that needs an earlier one first (Step before SetupJob): FAILED_PRECONDITION."""


class PeerFailed(OutOfOrder):
    """A peer did not serve its part of the state (PullState: unreachable, at another step,
    not of this group): FAILED_PRECONDITION naming the peer; nothing was changed."""


class ProtocolMismatch(OutOfOrder):
    """The coordinator speaks another orchard protocol version: FAILED_PRECONDITION, since
    no retry helps until one side is updated."""


class JobLost(WorkerError):
    """The caller's job is no longer on this worker (its process died, it was ended as an
    orphan, or another job replaced it), but the worker itself is up: ABORTED with a message
    starting "job lost:". The coordinator can set the job up again on this worker."""
