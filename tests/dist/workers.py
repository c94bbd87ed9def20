"""Functions the multi-process tests run on every rank (importable by spawned children).

pytest imports test files in importlib mode, which spawned processes cannot re-import, so
everything a child runs lives here, in a plain module.
"""

from __future__ import annotations

import numpy as np

SIZES = [1, 2, 7, 1001, 30_011]


def data(rank: int, n: int) -> np.ndarray:
    return np.random.default_rng(1000 * rank + n).standard_normal(n).astype(np.float32)


def exercise(group, ctx):
    out = {}
    for n in SIZES:
        x = data(ctx["rank"], n)
        a, b = group.shard_of(n)
        out[n] = {
            "all_reduce": group.all_reduce(x),
            "reduce_scatter": group.reduce_scatter(x),
            "all_gather": group.all_gather(x[a:b] * 2, n),
            "broadcast": group.broadcast(x, root=group.size - 1),
            "reduce": group.reduce(x, root=1),
        }
    group.barrier()
    return out


def compressed(group, ctx):
    x = data(ctx["rank"], 50_000)
    return group.all_reduce(x), group.reduce_scatter(x), group.bytes_sent


# ---- distributed AdamW ---------------------------------------------------------------------
def template():
    """A small nested parameter tree with decayed and undecayed (norm, bias) arrays."""
    import mlx.core as mx

    rng = np.random.default_rng(7)

    def arr(*shape):
        return mx.array(rng.standard_normal(shape).astype(np.float32) * 0.1)

    return {
        "layers": [
            {"q_proj": {"lora_a": arr(33, 4), "lora_b": arr(4, 17)}, "bias": arr(17)}
            for _ in range(3)
        ],
        "norm": {"weight": arr(33)},
    }


def synthetic_grads(rank: int, step: int):
    """Rank ``rank``'s (grads_of_sum, loss_sum, n_tokens) at ``step``: deterministic."""
    import mlx.core as mx
    from mlx.utils import tree_map

    rng = np.random.default_rng(10_000 * step + rank)
    ntok = int(rng.integers(5, 50))
    scale = 3.0 if step % 2 else 0.05  # odd steps get clipped, even ones do not
    grads = tree_map(
        lambda p: mx.array(rng.standard_normal(p.shape).astype(np.float32) * scale * ntok),
        template(),
    )
    return grads, float(rng.uniform(1.0, 3.0) * ntok), ntok


LRS = [1e-2, 5e-3, 2e-2, 1e-2, 7e-3, 3e-3]


def optimizer_run(group, ctx, mode, codec="none", resume_at=None):
    from mlx.utils import tree_flatten

    from engine.config import OptimSpec
    from engine.dist.dist_optimizer import DistributedAdamW

    spec = OptimSpec(grad_clip=1.0, weight_decay=0.1)
    opt = DistributedAdamW(group, mode, spec, template(), compression=codec, bucket_mb=0.001)
    history, params = [], None
    for step, lr in enumerate(LRS):
        if step == resume_at:  # a fresh optimizer restored from a checkpoint continues
            saved = opt.state_dict()
            opt = DistributedAdamW(
                group, mode, spec, template(), compression=codec, bucket_mb=0.001
            )
            opt.load_state_dict(saved)
        grads, loss, ntok = synthetic_grads(ctx["rank"], step)
        params, stats = opt.step(grads, loss, ntok, lr)
        history.append(
            (stats.loss_sum, stats.n_tokens, stats.grad_norm, stats.comm_s, stats.comm_hidden_s)
        )
    flat = {k: np.array(v) for k, v in tree_flatten(params)}
    return flat, history, opt.optimizer_state_bytes(), opt.layout.total
