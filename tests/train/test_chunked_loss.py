"""The chunked loss through the output layer: the loss and gradients of token_loss_sum, in
chunks, with less memory; and only where the model is a plain body and frozen head."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map
from mlx_lm.models import llama

from engine.data import TokenizedSet, collate, pack
from engine.lora.apply import apply_lora
from engine.train import GradientStep
from engine.train import chunked_loss as cl
from engine.train.step import token_loss_sum
from tests.train.conftest import synthetic_items, tiny_lora_model


def plain_loss(*args):
    """token_loss_sum under another name: GradientStep keeps it as it is."""
    return token_loss_sum(*args)


def _nonzero_adapters(model):
    # LoRA's B starts at zero; a step's gradients then reach every adapter weight
    model.update(tree_map(lambda p: p + 0.05, model.trainable_parameters()))
    mx.eval(model.parameters())


def _untied_model(job, vocab=64):
    mx.random.seed(1)
    args = llama.ModelArgs(
        model_type="llama", hidden_size=32, num_hidden_layers=2, intermediate_size=48,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=vocab,
        tie_word_embeddings=False,
    )  # fmt: skip
    model = llama.Model(args)
    mx.eval(model.parameters())
    apply_lora(model, job.lora, seed=0)
    return model


def _same(a, b):
    (la, na, ga), (lb, nb, gb) = a, b
    assert na.item() == nb.item()
    np.testing.assert_allclose(la.item(), lb.item(), rtol=1e-5)
    ga, gb = dict(tree_flatten(ga)), dict(tree_flatten(gb))
    assert set(ga) == set(gb) and ga
    top = max(float(mx.abs(g).max()) for g in ga.values())
    for k in ga:  # float order differs: compare against the largest gradient
        np.testing.assert_allclose(np.array(gb[k]), np.array(ga[k]), rtol=0, atol=2e-5 * top,
                                   err_msg=k)  # fmt: skip


@pytest.mark.parametrize("tied", [True, False])
def test_the_chunks_give_the_loss_and_gradients_of_token_loss_sum(job, monkeypatch, tied):
    monkeypatch.setattr(cl, "CHUNK_BYTES", 4 * 64 * 16)  # 16 rows a chunk: several chunks
    job.lora.dropout = 0.0
    model = tiny_lora_model(job) if tied else _untied_model(job)
    _nonzero_adapters(model)
    assert cl.takes_chunked_loss(model)
    batch = [collate(synthetic_items(6, length=21), 0)]  # 120 rows, masked prompts
    chunked = GradientStep(model)
    plain = GradientStep(model, plain_loss)
    assert chunked._first is not plain._first
    a, b = plain(batch), chunked(batch)
    mx.eval(a, b)
    _same(a, b)


def test_packed_rows_through_the_chunks(job, monkeypatch):
    monkeypatch.setattr(cl, "CHUNK_BYTES", 4 * 64 * 16)
    job.lora.dropout = 0.0
    model = tiny_lora_model(job)
    _nonzero_adapters(model)
    rng = np.random.default_rng(0)
    data = TokenizedSet()
    for i in range(7):
        n = int(rng.integers(4, 20))
        data.append(rng.integers(1, 64, n), (rng.random(n) < 0.7).astype(np.uint8), ("f", i))
    batch = [collate([r for r in pack(data, 48, seed=0)], 0)]
    a, b = GradientStep(model, plain_loss)(batch), GradientStep(model)(batch)
    mx.eval(a, b)
    _same(a, b)


def test_the_step_peaks_lower_than_with_the_whole_logits(job, monkeypatch):
    monkeypatch.setattr(cl, "CHUNK_BYTES", 2**19)  # 16 rows a chunk: 16 chunks
    job.lora.dropout = 0.0
    model = _untied_model(job, vocab=8192)  # logits: 4 x 64 x 8192 x 4 bytes = 8 MiB
    items = [(np.arange(i, i + 65, dtype=np.int32) % 8192, np.ones(65, np.uint8)) for i in range(4)]
    batch = [collate(items, 0)]
    peaks = {}
    for name, loss in (("plain", plain_loss), ("chunked", token_loss_sum)):
        step = GradientStep(model, loss)
        mx.eval(step(batch))  # compiled, and the allocator warmed
        mx.clear_cache()
        mx.reset_peak_memory()
        active = mx.get_active_memory()
        mx.eval(step(batch))
        peaks[name] = mx.get_peak_memory() - active
    assert peaks["chunked"] < 0.6 * peaks["plain"], peaks


class _ScaledLogits(llama.Model):
    def __call__(self, inputs, cache=None):
        return 2.0 * super().__call__(inputs, cache=cache)


def test_only_a_plain_frozen_head_outside_fp16_is_chunked(job):
    model = tiny_lora_model(job)
    assert cl.takes_chunked_loss(model)
    # a model that scales its logits after the head: the probe sees it
    scaled = _ScaledLogits(model.args)
    mx.eval(scaled.parameters())
    assert not cl.takes_chunked_loss(scaled)
    assert cl.loss_for(scaled) is token_loss_sum
    # a trainable output layer: the chunks would lose its gradient
    untied = _untied_model(job)
    untied.lm_head.unfreeze()
    assert not cl.takes_chunked_loss(untied)
    # fp16: the gradient is made before the loss scale could keep it from underflowing
    half = tiny_lora_model(job)
    half.set_dtype(mx.float16)
    assert not cl.takes_chunked_loss(half)
    # a model with no body and head at all
    assert not cl.takes_chunked_loss(nn.Linear(4, 4))


def test_the_chunks_run_one_after_another(monkeypatch):
    """Each chunk waits for the one before (mx.depends), so only about one chunk's logits
    live at a time: the loss's peak does not grow with the rows (it doubled from 4 to 32
    chunks when MLX was free to start every chunk's logits at once)."""
    monkeypatch.setattr(cl, "CHUNK_BYTES", 2**19)  # 16 rows of a 8192 vocabulary a chunk
    vocab, hidden = 8192, 32
    mx.random.seed(0)
    head = nn.Linear(hidden, vocab, bias=False)
    mx.eval(head.parameters())

    def peak(rows: int) -> int:
        h = mx.random.normal((1, rows, hidden))
        targets = mx.random.randint(0, vocab, (1, rows))
        weights = mx.ones((1, rows))
        ce = cl._chunked_ce(head, vocab)
        step = mx.compile(mx.value_and_grad(lambda x: ce(x, targets, weights)[0]))
        mx.eval(step(h))  # compiled, and the allocator warmed
        mx.clear_cache()
        mx.reset_peak_memory()
        active = mx.get_active_memory()
        mx.eval(step(h))
        return mx.get_peak_memory() - active

    four, thirty_two = peak(64), peak(512)
    assert thirty_two < 1.25 * four, (four, thirty_two)


def test_a_chunk_keeps_no_float32_copy_of_its_logits():
    """The logits' gradient is one fused kernel that makes the exp again: a compiled chunk's
    peak is well under the plain composition's (which keeps the float32 logits and their
    exp alive until the gradient), with the same numbers."""

    def composed(head, hc, tc, wc):  # the chunk as written before the fused kernel
        logits = head(hc)
        x = logits.astype(mx.float32)
        top = mx.max(x, axis=-1, keepdims=True)
        e = mx.exp(x - top)
        total = mx.sum(e, axis=-1, keepdims=True)
        picked = mx.take_along_axis(x, tc[:, None], axis=-1)
        loss = ((top + mx.log(total) - picked).squeeze(-1) * wc).sum()
        hit = mx.arange(x.shape[-1]) == tc[:, None]
        dlogits = ((e / total - hit) * wc[:, None]).astype(logits.dtype)
        _, (dh,) = mx.vjp(head, [hc], [dlogits])
        return loss, dh

    mx.random.seed(3)
    rows, hidden, vocab = 256, 64, 4000
    head = nn.Linear(hidden, vocab, bias=False)
    head.set_dtype(mx.bfloat16)
    h = (mx.random.normal((rows, hidden)) * 0.1).astype(mx.bfloat16)
    t = mx.random.randint(0, vocab, (rows,))
    w = (mx.random.uniform(shape=(rows,)) > 0.2).astype(mx.float32)
    mx.eval(head.parameters(), h, t, w)
    peaks, outs = [], []
    for chunk in (composed, cl._chunk):
        f = mx.compile(lambda h, t, w, chunk=chunk: chunk(head, h, t, w))
        for _ in range(2):  # the first call compiles
            mx.synchronize()
            mx.clear_cache()
            mx.reset_peak_memory()
            base = mx.get_active_memory()
            out = f(h, t, w)
            mx.eval(out)
            peak = mx.get_peak_memory() - base
        peaks.append(peak / (rows * vocab))
        outs.append(out)
    assert outs[0][0].item() == outs[1][0].item()
    assert mx.array_equal(outs[0][1], outs[1][1]).item()
    assert peaks[1] < 0.8 * peaks[0], (
        f"bytes a logit: composed {peaks[0]:.1f}, fused {peaks[1]:.1f}"
    )
