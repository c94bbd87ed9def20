"""The optimizer half of a step: normalise by the global token count, clip, AdamW.

Mixed precision: with bf16/fp16 compute the model's trainable weights are low-precision
copies; the fp32 *master* weights live here and AdamW updates those. In fp32 the model's
own weights are the masters (no second copy, so no extra memory).
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from engine.config import JobSpec
from engine.optim import AdamW, DynamicLossScale, all_finite, clip_by_global_norm, make_schedule

log = logging.getLogger(__name__)

DTYPES = {"fp32": mx.float32, "bf16": mx.bfloat16, "fp16": mx.float16}


class UpdateResult(NamedTuple):
    grad_norm: mx.array | None  # lazy scalar (pre-clip norm of the normalised gradient)
    learning_rate: float
    skipped: bool  # fp16 overflow: the update was not applied


def _assign(dst: Any, src: Any) -> None:
    """Copy the leaves of ``src`` into the containers of ``dst`` in place (compile outputs)."""
    items = dst.items() if isinstance(dst, dict) else enumerate(dst)
    for k, v in items:
        if isinstance(v, (dict, list)):
            _assign(v, src[k])
        else:
            dst[k] = src[k]


def _assign_paths(dst: Any, items: list[tuple[str, mx.array]]) -> None:
    """Set ``dst[a][b]... = value`` for dotted paths, in place (list indices are digits)."""
    for path, value in items:
        node = dst
        *parents, last = path.split(".")
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value


def cast_for_compute(model: nn.Module, precision: str) -> None:
    """Cast the model's floating weights to the compute dtype (no-op for fp32)."""
    dtype = DTYPES[precision]
    if dtype != mx.float32:
        model.set_dtype(dtype)


class Updater:
    """Holds AdamW, its fp32 master weights, the schedule and the fp16 loss scale.

    Build it *before* :func:`cast_for_compute` so the masters start from the fp32 values.
    """

    def __init__(self, model: nn.Module, job: JobSpec, total_steps: int, compile: bool = True):
        o = job.optim
        self.model = model
        self.precision = job.run.precision
        self.mixed = self.precision != "fp32"
        self.max_norm = o.grad_clip
        self.schedule = make_schedule(o, total_steps)
        self.optimizer = AdamW(
            learning_rate=o.learning_rate,
            betas=(o.beta1, o.beta2),
            eps=o.eps,
            weight_decay=o.weight_decay,
            decay_norms_and_biases=o.decay_norms_and_biases,
        )
        # the loss is a token *sum*, so its gradients are ~tokens x those of a mean: start low
        self.loss_scale = DynamicLossScale() if self.precision == "fp16" else None
        trainable = model.trainable_parameters()
        if not tree_flatten(trainable):
            raise ValueError("train: the model has no trainable parameters (was LoRA applied?)")
        self.master = tree_map(lambda p: p.astype(mx.float32), trainable) if self.mixed else None
        self.optimizer.init(self.master if self.mixed else trainable)
        self._update = self._build(compile)

    def _build(self, compile: bool):
        model, opt, mixed, max_norm = self.model, self.optimizer, self.mixed, self.max_norm

        def update(grads, ntokens, inv_scale):
            factor = inv_scale / mx.maximum(ntokens.astype(mx.float32), 1.0)
            grads = tree_map(lambda g: g.astype(mx.float32) * factor, grads)
            grads, norm = clip_by_global_norm(grads, max_norm)
            if mixed:
                new = opt.apply_gradients(grads, self.master)
                _assign(self.master, new)
                dtype = DTYPES[self.precision]
                model.update(tree_map(lambda p: p.astype(dtype), new))
            else:
                model.update(opt.apply_gradients(grads, model.trainable_parameters()))
            return norm

        if not compile:
            return update
        state = [model.state, opt.state] + ([self.master] if mixed else [])
        return mx.compile(update, inputs=state, outputs=state)

    @property
    def loss_scale_value(self) -> float:
        return self.loss_scale.scale if self.loss_scale else 1.0

    def apply_update(self, grads: Any, ntokens: mx.array | float, step: int) -> UpdateResult:
        """Apply update number ``step`` (0-based) with gradients of the *global* token sum.

        In fp16 this waits for the gradients to check them for inf/nan (the only host sync).
        """
        lr = self.schedule(step)
        if self.loss_scale is not None:
            finite = bool(all_finite(grads))
            if not self.loss_scale.update(finite):
                return UpdateResult(None, lr, True)
        self.optimizer.learning_rate = lr
        inv = mx.array(1.0 / self.loss_scale_value, mx.float32)
        norm = self._update(grads, mx.array(ntokens, mx.float32), inv)
        return UpdateResult(norm, lr, False)

    # ---- state for checkpoints ---------------------------------------------------------
    def state_arrays(self) -> dict[str, mx.array]:
        """Flat arrays a resume needs: fp32 master weights and AdamW moments."""
        masters = self.master if self.mixed else self.model.trainable_parameters()
        out = {f"param.{k}": v.astype(mx.float32) for k, v in tree_flatten(masters)}
        for k, v in tree_flatten(self._moment_tree()):
            out[f"adam.{k}"] = v
        out["adam_step"] = self.optimizer.state["step"]
        return out

    def _moment_tree(self) -> dict:
        return {k: v for k, v in self.optimizer.state.items() if k not in ("step", "learning_rate")}

    def load_state_arrays(self, arrays: dict[str, mx.array]) -> None:
        """Inverse of :meth:`state_arrays`; updates every container in place (compiled refs)."""
        flat = [(k[6:], v) for k, v in arrays.items() if k.startswith("param.")]
        params = tree_unflatten(flat)
        if self.mixed:
            _assign_paths(self.master, flat)
            dtype = DTYPES[self.precision]
            self.model.update(tree_map(lambda p: p.astype(dtype), params))
        else:
            self.model.update(params)
        _assign_paths(
            self.optimizer.state, [(k[5:], v) for k, v in arrays.items() if k.startswith("adam.")]
        )
        self.optimizer.state["step"] = arrays["adam_step"].astype(mx.uint64)
        mx.eval(self.model.parameters(), self.optimizer.state)
