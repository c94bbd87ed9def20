"""The one error type of engine.model: bad input named plainly, never a bare traceback."""

from __future__ import annotations


class ModelError(ValueError):
    """A model folder, id or file that cannot be used; the message names the path and the fault."""
