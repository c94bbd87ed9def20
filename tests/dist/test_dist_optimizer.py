"""N processes running DistributedAdamW reproduce one process's AdamW on the global batch."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map

from engine.dist.local_cluster import run_local
from engine.optim import AdamW, clip_by_global_norm
from tests.dist.workers import LRS, optimizer_run, synthetic_grads, template


def _reference(nprocs):
    """Single-process AdamW (engine.optim) on the summed gradients of all ranks."""
    opt = AdamW(learning_rate=LRS[0], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    params = template()
    losses = []
    for step, lr in enumerate(LRS):
        parts = [synthetic_grads(r, step) for r in range(nprocs)]
        ntok = sum(p[2] for p in parts)
        total = parts[0][0]
        for g, _, _ in parts[1:]:
            total = tree_map(lambda a, b: a + b, total, g)
        grads, norm = clip_by_global_norm(tree_map(lambda g, k=ntok: g / k, total), 1.0)
        opt.learning_rate = lr
        params = opt.apply_gradients(grads, params)
        losses.append((sum(p[1] for p in parts), ntok, float(norm)))
    return {k: np.array(v) for k, v in tree_flatten(params)}, losses


def _assert_close(got, want, rel=1e-5):
    for name, ref in want.items():
        diff = np.abs(got[name] - ref).max() / max(np.abs(ref).max(), 1e-12)
        assert diff < rel, f"{name}: relative difference {diff:.2e}"


MODES = ["all-reduce", "ring", "reduce-scatter", "parameter-server"]


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_matches_single_process_adamw(mode):
    want, losses = _reference(2)
    results = run_local(2, optimizer_run, mode, mode=mode, timeout_s=180)
    for flat, history, _, _ in results:
        _assert_close(flat, want)
        for (loss, ntok, norm, comm, hidden), (rl, rn, rnorm) in zip(history, losses, strict=True):
            assert (
                ntok == rn
                and loss == pytest.approx(rl, rel=1e-5)
                and norm == pytest.approx(rnorm, rel=1e-4)
            )
            assert 0.0 <= hidden <= comm  # the overlapped part of the collective time


@pytest.mark.slow
def test_zero1_three_workers_shards_optimizer_memory_and_resumes():
    want, _ = _reference(3)
    results = run_local(
        3, optimizer_run, "reduce-scatter", "none", 3, mode="reduce-scatter", timeout_s=180
    )
    for flat, _, state_bytes, n in results:
        _assert_close(flat, want)
        full = 2 * 4 * n  # m and v in fp32
        assert state_bytes <= full / 3 + 2 * 4, (
            f"ZeRO-1 state {state_bytes} B is not ~1/3 of {full} B"
        )
    assert sum(r[2] for r in results) == 2 * 4 * results[0][3]  # the shards tile the whole state


def test_all_reduce_state_is_full_and_resume_is_exact():
    want, _ = _reference(2)
    results = run_local(2, optimizer_run, "all-reduce", "none", 2, mode="all-reduce", timeout_s=180)
    for flat, _, state_bytes, n in results:
        _assert_close(flat, want)
        assert state_bytes == 2 * 4 * n


def test_mlx_mode_matches_single_process_adamw(tmp_path):
    from engine.dist.mlx_env import local_ring_envs

    want, _ = _reference(2)
    results = run_local(
        2, optimizer_run, "mlx", mode="mlx", env=local_ring_envs(tmp_path, 2), timeout_s=180
    )
    for flat, _, _, _ in results:
        _assert_close(flat, want)


@pytest.mark.parametrize(("mode", "codec"), [("ring", "bf16"), ("reduce-scatter", "fp16")])
def test_compressed_wire_stays_close_and_workers_agree(mode, codec):
    """The buckets are cast on the device and their bf16/fp16 buffers go out as they are."""
    want, _ = _reference(2)
    results = run_local(2, optimizer_run, mode, codec, mode=mode, compression=codec, timeout_s=180)
    for flat, history, _, _ in results:
        for name in want:
            assert np.array_equal(flat[name], results[0][0][name])  # no drift between workers
            # Adam normalises the gradient, so a 2^-8 gradient error moves params by << lr
            assert np.abs(flat[name] - want[name]).max() < 0.05 * sum(LRS)
        assert [h[1] for h in history] == [r[1] for r in _reference(2)[1]]  # exact token counts


def test_mx_single_group_shortcut():
    from engine.config import OptimSpec
    from engine.dist.dist_optimizer import DistributedAdamW
    from engine.dist.group import SingleGroup

    opt = DistributedAdamW(SingleGroup(), "all-reduce", OptimSpec(), {"w": mx.ones((3,))})
    params, stats = opt.step({"w": mx.full((3,), 2.0)}, 6.0, 2, 0.1)
    assert stats.n_tokens == 2 and stats.loss_sum == 6.0 and params["w"].shape == (3,)


def test_overflow_skips_and_loss_scale_is_divided_out():
    from engine.config import OptimSpec
    from engine.dist.dist_optimizer import DistributedAdamW
    from engine.dist.group import SingleGroup

    def make():
        return DistributedAdamW(SingleGroup(), "all-reduce", OptimSpec(), {"w": mx.ones((4,))})

    opt = make()
    params, stats = opt.step({"w": mx.array([1.0, np.inf, 0.0, 0.0])}, 6.0, 2, 0.1)
    assert stats.skipped and np.array_equal(np.array(params["w"]), np.ones(4))
    state = opt.state_dict()  # no moment moved and AdamW's step counter did not advance
    assert state["adam_step"] == 0 and not state["m"].any() and not state["v"].any()
    scaled, _ = make().step({"w": mx.full((4,), 8.0)}, 6.0, 2, 0.1, grad_scale=4.0)
    plain, _ = make().step({"w": mx.full((4,), 2.0)}, 6.0, 2, 0.1)
    assert np.array_equal(np.array(scaled["w"]), np.array(plain["w"]))


def test_one_worker_step_is_mlx_only(monkeypatch):
    """With one worker the step never reaches numpy: sum, norm, clip and AdamW are MLX."""
    import engine.dist.dist_optimizer as dist_optimizer
    import engine.optim.flat_adamw as flat_adamw
    import engine.optim.flat_layout as flat_layout
    from engine.config import OptimSpec
    from engine.dist.dist_optimizer import DistributedAdamW
    from engine.dist.group import SingleGroup
    from tests.dist.workers import template

    opt = DistributedAdamW(SingleGroup(), "all-reduce", OptimSpec(), template())
    grads, loss, ntok = synthetic_grads(0, 0)

    class NoNumpy:
        def __getattr__(self, name):
            raise AssertionError(f"numpy.{name} was used in a one-worker step")

    for module in (dist_optimizer, flat_adamw, flat_layout):
        monkeypatch.setattr(module, "np", NoNumpy())
    params, stats = opt.step(grads, mx.array(loss), mx.array(float(ntok)), 0.01)
    assert stats.n_tokens == ntok and stats.comm_s == 0.0 and not stats.skipped
    assert params["norm"]["weight"].dtype == mx.float32
