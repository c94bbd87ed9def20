"""AdamW with decoupled weight decay, in mlx's optimizer template.

The maths lives once, in :func:`adamw_update`, so this tree optimizer and the device
optimizer over one flat vector (engine/optim/flat_adamw.py: every trainer, ZeRO-1 shards
included) run the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import mlx.core as mx
from mlx.optimizers import Optimizer
from mlx.utils import tree_flatten, tree_map, tree_map_with_path

# Parameter-name parts that mark biases and norm weights (no decay on them by default,
# as in most LLM recipes: decaying a norm's gain towards 0 only hurts).
_NO_DECAY_PARTS = ("bias", "norm", "ln_", "layernorm", "rmsnorm")


def is_no_decay_name(name: str) -> bool:
    """True for a bias or a norm weight, judged from its dotted parameter name."""
    parts = name.lower().split(".")
    return any(marker in part for part in parts for marker in _NO_DECAY_PARTS)


class AdamWScalars(NamedTuple):
    """The per-step scalars of one AdamW update (mx scalars or floats), so the per-element
    pass reads them instead of computing them: inside ``mx.compile`` a scalar op feeding the
    elementwise kernel is fused into it and run once *per element* (the two ``power`` calls
    of the bias correction made a 5M-element update 4x slower on a CPU)."""

    keep_m: Any  # beta1, or 1 on a skipped step (the moment is kept)
    coef_m: Any  # (1 - keep_m) * grad_scale
    keep_v: Any
    coef_v: Any  # (1 - keep_v) * grad_scale**2
    lr: Any  # 0 on a skipped step
    step_lr: Any  # lr / (1 - beta1**step): the first moment's bias correction folded in
    v_corr: Any  # 1 / sqrt(1 - beta2**step), the second's (None without bias correction)


def adamw_scalars(
    step: mx.array | int,
    lr: mx.array | float,
    betas: Sequence[float],
    bias_correction: bool = True,
    grad_scale: mx.array | float = 1.0,
    apply: mx.array | None = None,
) -> AdamWScalars:
    """The scalars of update number ``step`` (1-based); see :func:`adamw_update`."""
    b1, b2 = betas
    mb1, mb2 = b1, b2  # the moments' betas: 1 (keep) on a skipped step
    if apply is not None:
        mb1, mb2 = mx.where(apply, b1, 1.0), mx.where(apply, b2, 1.0)
        lr = mx.where(apply, lr, 0.0)
        grad_scale = mx.where(apply, grad_scale, 0.0)
    if isinstance(grad_scale, float) and grad_scale == 1.0:
        coef_m, coef_v = 1 - mb1, 1 - mb2
    else:
        coef_m, coef_v = (1 - mb1) * grad_scale, (1 - mb2) * mx.square(grad_scale)
    step_lr, v_corr = lr, None
    if bias_correction:
        step = mx.array(step, mx.float32)
        step_lr = lr / (1 - mx.power(mx.array(b1, mx.float32), step))
        v_corr = mx.rsqrt(1 - mx.power(mx.array(b2, mx.float32), step))
    return AdamWScalars(mb1, coef_m, mb2, coef_v, lr, step_lr, v_corr)


def adamw_apply(
    param: mx.array,
    grad: mx.array,
    m: mx.array,
    v: mx.array,
    s: AdamWScalars,
    eps: float,
    weight_decay: float,
    decay: mx.array | float = 1.0,
    apply: mx.array | None = None,
) -> tuple[mx.array, mx.array, mx.array]:
    """The per-element half of :func:`adamw_update`, given its scalars."""
    if apply is not None:
        grad = mx.where(apply, grad, 0.0)  # an inf/nan gradient must not reach the moments
    m = s.keep_m * m + s.coef_m * grad
    v = s.keep_v * v + s.coef_v * mx.square(grad)
    # lr * m_hat / (sqrt(v_hat) + eps) with the corrections as scalars: one division per
    # element instead of three
    root = mx.sqrt(v) if s.v_corr is None else mx.sqrt(v) * s.v_corr
    decayed = param * (1 - s.lr * weight_decay * decay) if weight_decay else param
    new = decayed - s.step_lr * m / (root + eps)
    return new.astype(param.dtype), m, v


def adamw_update(
    param: mx.array,
    grad: mx.array,
    m: mx.array,
    v: mx.array,
    step: mx.array | int,
    lr: mx.array | float,
    betas: Sequence[float],
    eps: float,
    weight_decay: float,
    decay: mx.array | float = 1.0,
    bias_correction: bool = True,
    grad_scale: mx.array | float = 1.0,
    apply: mx.array | None = None,
) -> tuple[mx.array, mx.array, mx.array]:
    """One AdamW update of one array (any shape, also a flat 1-D shard).

    ``step`` is the 1-based number of this update; ``decay`` multiplies the weight decay
    and may be a scalar or an array of ``param``'s shape (a per-element 0/1 mask for flat
    shards that mix decayed and undecayed parameters). ``grad_scale`` multiplies the
    gradient inside the moment updates (no scaled copy of the gradient is made: over a flat
    vector of every trainable weight, each such copy is a vector's worth of memory).
    ``apply`` (an mx bool scalar) False returns ``param``, ``m`` and ``v`` exactly as they
    were, inf/nan gradients included, with scalar selects only: a skipped step costs no
    elementwise select and no extra memory. Returns ``(param, m, v)``. A compiled caller
    should compile :func:`adamw_scalars` and :func:`adamw_apply` apart (AdamWScalars says
    why), as :class:`engine.optim.FlatAdamW` does.
    """
    s = adamw_scalars(step, lr, betas, bias_correction, grad_scale, apply)
    return adamw_apply(param, grad, m, v, s, eps, weight_decay, decay, apply)


class AdamW(Optimizer):
    r"""AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, "Decoupled Weight
    Decay Regularization", ICLR 2019, Algorithm 2), with Adam's bias correction (Kingma & Ba,
    ICLR 2015). With learning rate :math:`\alpha_t` (from a schedule) and decay :math:`\lambda`:

    .. math::

        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \hat m_t &= m_t / (1 - \beta_1^t), \quad \hat v_t = v_t / (1 - \beta_2^t) \\
        \theta_t &= \theta_{t-1} - \alpha_t \lambda d\, \theta_{t-1}
                    - \alpha_t \hat m_t / (\sqrt{\hat v_t} + \epsilon)

    The decay is *decoupled*: it shrinks the weights directly instead of entering the
    gradient, so Adam's per-coordinate scaling does not weaken it. :math:`d` is the decay
    multiplier of the parameter: 0 for biases and norm weights unless
    ``decay_norms_and_biases`` is set, else 1.

    Decay can be passed explicitly: ``apply_gradients(grads, params, decay=tree)`` with a
    tree of multipliers (scalars or arrays shaped like the parameter). The trainers update a
    flat vector with :class:`engine.optim.FlatAdamW` (the same maths, a per-element mask).
    """

    def __init__(
        self,
        learning_rate: float | Callable[[mx.array], mx.array],
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        decay_norms_and_biases: bool = False,
        bias_correction: bool = True,
    ):
        super().__init__()
        if not callable(learning_rate) and not 0.0 <= float(learning_rate):
            raise ValueError(f"AdamW learning_rate should be >= 0, got {learning_rate}")
        if len(betas) != 2:
            raise ValueError(f"AdamW betas should be two numbers, got {betas!r}")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"AdamW beta{i + 1} should be in [0, 1), got {beta}")
        if not eps >= 0.0:
            raise ValueError(f"AdamW eps should be >= 0, got {eps}")
        if not weight_decay >= 0.0:
            raise ValueError(f"AdamW weight_decay should be >= 0, got {weight_decay}")
        self._maybe_schedule("learning_rate", learning_rate)
        self.betas = tuple(float(b) for b in betas)
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.decay_norms_and_biases = decay_norms_and_biases
        self.bias_correction = bias_correction
        self._decay_cache: tuple[tuple[str, ...], Any] | None = None

    def init_single(self, parameter: mx.array, state: dict) -> None:
        """Moments start at zero, in the parameter's dtype (fp32 for master weights)."""
        state["m"] = mx.zeros_like(parameter)
        state["v"] = mx.zeros_like(parameter)

    def apply_single(
        self, gradient: mx.array, parameter: mx.array, state: dict, decay: Any = 1.0
    ) -> mx.array:
        """Update one parameter and its moments in ``state``; returns the new parameter."""
        lr = self.learning_rate.astype(gradient.dtype)
        new, state["m"], state["v"] = adamw_update(
            parameter,
            gradient,
            state["m"],
            state["v"],
            self.step,
            lr,
            self.betas,
            self.eps,
            self.weight_decay,
            decay,
            self.bias_correction,
        )
        return new

    def decay_tree(self, gradients: dict) -> Any:
        """Per-parameter decay multipliers judged from the names (cached by name list)."""
        names = tuple(k for k, _ in tree_flatten(gradients))
        if self._decay_cache is None or self._decay_cache[0] != names:

            def mult(path: str, _g: Any) -> float:
                return 1.0 if self.decay_norms_and_biases or not is_no_decay_name(path) else 0.0

            self._decay_cache = (names, tree_map_with_path(mult, gradients))
        return self._decay_cache[1]

    def apply_gradients(self, gradients: dict, parameters: dict, decay: Any = None) -> Any:
        """As mlx's, plus ``decay``: a tree of decay multipliers (default: by name)."""
        if not self._initialized:
            self.init(gradients)
        for param, scheduler in self._schedulers.items():
            self.state[param] = scheduler(self.step)
        self.state["step"] = self.step + 1
        if decay is None:
            decay = self.decay_tree(gradients)
        return tree_map(self.apply_single, gradients, parameters, self.state, decay)
