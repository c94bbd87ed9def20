"""Gradient checkpointing (``run.grad_checkpoint``), as mlx-lm does it.

mlx-lm's ``grad_checkpoint(layer)`` (mlx_lm/tuner/trainer.py) replaces the layer class's
``__call__`` with one that runs the layer under ``mx.checkpoint``: the backward pass keeps
only each layer's input and recomputes the rest, trading about a third more compute for
activation memory that no longer grows with depth. mlx-lm patches the class itself, which
reaches every model of that class in the process; Orchard gives each checkpointed layer a
subclass of its own class instead, so only this model's layers change (the parameter names,
and so the adapters, stay the same).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

_SUBCLASSES: dict[type, type] = {}


def _checkpointed(cls: type) -> type:
    if getattr(cls, "_orchard_grad_checkpoint", False):
        return cls
    if cls not in _SUBCLASSES:
        call = cls.__call__

        def __call__(self, *args, **kwargs):  # noqa: ANN001, ANN202 - the layer's own signature
            def inner(params, *args, **kwargs):  # noqa: ANN001, ANN202
                self.update(params)
                return call(self, *args, **kwargs)

            return mx.checkpoint(inner)(self.trainable_parameters(), *args, **kwargs)

        _SUBCLASSES[cls] = type(cls.__name__, (cls,), {
            "__call__": __call__, "__module__": cls.__module__, "_orchard_grad_checkpoint": True,
        })  # fmt: skip
    return _SUBCLASSES[cls]


def enable_grad_checkpoint(model: nn.Module) -> int:
    """Checkpoint every transformer layer of ``model`` (after LoRA is applied: the trainable
    parameters are the checkpoint's inputs). Returns how many layers are checkpointed."""
    layers = getattr(model, "layers", None)
    if not layers:
        return 0
    for layer in layers:
        layer.__class__ = _checkpointed(type(layer))
    return len(layers)


def is_grad_checkpointed(model: nn.Module) -> bool:
    layers = getattr(model, "layers", None) or []
    return bool(layers) and all(getattr(type(x), "_orchard_grad_checkpoint", False) for x in layers)
