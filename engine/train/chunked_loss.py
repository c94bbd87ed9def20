"""The loss through the output layer in chunks of rows, its gradient made on the way forward.

:func:`engine.train.step.token_loss_sum` (like mlx-lm's loss) makes the logits of every
position, (B, T, vocab), then the cross-entropy, and autodiff walks back through both: the
exp over the logits runs twice (forward, then the softmax of the backward), and the logits
and their gradient are the step's largest buffers. With a 32k vocabulary on a CPU that is
about a quarter of a LoRA step (58M-parameter Llama shape, rank 64: 3.75 s a step, 3.25 s
here; peak 245 MiB lower). Here the output layer and the cross-entropy run a few hundred
rows at a time, and each chunk makes its logits, its loss and the gradient of that loss
w.r.t. the hidden states (through the output layer) at once, then frees them all (the exp
is made twice, each time inside a fused kernel, rather than kept in float32: ``_logits_grad``): no
(B, T, vocab) buffer lives (each chunk waits for the one before, ``mx.depends``: left free,
MLX started every chunk's logits before finishing any, and the loss's peak grew with the
rows: 312 MiB for 1024 rows of a 32k vocabulary, 179 MiB in order), and the backward pass
starts from the stored (B, T, hidden) gradient (an ``mx.custom_function``). The maths is the same up to float order
(tests/train/test_chunked_loss.py); the loss is summed in float32.

It applies where the model is a body and an output layer (``head(model.model(x))`` gives
``model(x)``: mlx-lm's Llama, Qwen, Mistral... a model that scales or caps its logits does
not), the output layer is frozen (the chunks hold no gradient for its weights; in LoRA it
is), and the compute is not fp16 (the gradient is made before the loss scale reaches it).
:func:`loss_for` checks all three and otherwise keeps ``token_loss_sum``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from engine.model.memory import LOSS_CHUNK_BYTES, loss_chunk_rows

log = logging.getLogger(__name__)

CHUNK_BYTES = LOSS_CHUNK_BYTES  # float32 logits per chunk: 131 rows of a 32k vocabulary


def split_output(model: nn.Module) -> tuple[Callable, Callable, nn.Module] | None:
    """``(body, head, head_module)`` of an mlx-lm model whose logits are
    ``head(body(inputs, cache=...))``, or None where it has no such parts. Whether the two
    really give the model's logits is :func:`takes_chunked_loss`'s to check."""
    body = getattr(model, "model", None)
    if not isinstance(body, nn.Module):
        return None
    head = getattr(model, "lm_head", None)
    if isinstance(head, nn.Module):
        return body, head, head
    embed = getattr(body, "embed_tokens", None)  # tied: the embedding is the output layer
    if isinstance(embed, nn.Module) and callable(getattr(embed, "as_linear", None)):
        return body, embed.as_linear, embed
    return None


def chunk_rows(vocab: int, hidden: int) -> int:
    """Rows a chunk (engine.model.memory.loss_chunk_rows, which the estimate counts too)."""
    return loss_chunk_rows(vocab, hidden, CHUNK_BYTES)


@mx.compile
def _shifted_exp(logits: mx.array, top: mx.array) -> mx.array:
    """exp(logits - top) in float32: one kernel, no float32 copy of the logits kept."""
    return mx.exp(logits.astype(mx.float32) - top)


@mx.compile
def _logits_grad(logits: mx.array, top: mx.array, total: mx.array, targets: mx.array,
                 weights: mx.array) -> mx.array:  # fmt: skip
    """(softmax - one-hot) * weight in the logits' dtype. The exp is made again here rather
    than kept from the forward: one fused kernel reads the logits and writes the gradient,
    so no (rows, vocab) float32 buffer outlives the sum (a third less of the chunk's memory
    than keeping it, the same numbers bit for bit)."""
    e = mx.exp(logits.astype(mx.float32) - top)
    hit = mx.arange(logits.shape[-1]) == targets
    return ((e / total - hit) * weights).astype(logits.dtype)


def _chunk(head: Callable, hc: mx.array, tc: mx.array, wc: mx.array) -> tuple[mx.array, mx.array]:
    """One chunk's weighted loss sum and its gradient w.r.t. ``hc``."""
    logits = head(hc)
    top = mx.max(logits, axis=-1, keepdims=True).astype(mx.float32)  # exact in any dtype
    total = mx.sum(_shifted_exp(logits, top), axis=-1, keepdims=True)
    picked = mx.take_along_axis(logits, tc[:, None], axis=-1).astype(mx.float32)
    loss = ((top + mx.log(total) - picked).squeeze(-1) * wc).sum()
    dlogits = _logits_grad(logits, top, total, tc[:, None], wc[:, None])
    _, (dh,) = mx.vjp(head, [hc], [dlogits])
    return loss, dh


def _loss_and_grad(head: Callable, rows: int, h: mx.array, targets: mx.array, weights: mx.array):
    """Weighted cross-entropy sum of ``head(h)`` over the rows of ``h`` (n, d), and its
    gradient w.r.t. ``h``, ``rows`` at a time. Each chunk's loss travels with its gradient
    in one buffer, so evaluation finishes a chunk (and frees its logits) before the next."""
    n = h.shape[0]
    parts, sizes = [], []
    for a in range(0, n, rows):
        hc, tc, wc = h[a : a + rows], targets[a : a + rows], weights[a : a + rows]
        if parts:  # not before the last chunk is done: then its logits are freed
            hc = mx.depends(hc, parts[-1])
        loss, dh = _chunk(head, hc, tc, wc)
        parts.append(mx.concatenate([dh.reshape(-1).astype(mx.float32), loss[None]]))
        sizes.append(dh.size)
    flat = mx.concatenate(parts) if len(parts) > 1 else parts[0]
    grads, losses, at = [], [], 0
    for size in sizes:
        grads.append(flat[at : at + size])
        losses.append(flat[at + size])
        at += size + 1
    grad = mx.concatenate(grads) if len(grads) > 1 else grads[0]
    return mx.sum(mx.stack(losses)), grad.reshape(h.shape)


def _chunked_ce(head: Callable, vocab: int) -> Callable:
    @mx.custom_function
    def ce_sum(h, targets, weights):
        d = h.shape[-1]
        flat = (h.reshape(-1, d), targets.reshape(-1), weights.reshape(-1).astype(mx.float32))
        loss, grad = _loss_and_grad(head, chunk_rows(vocab, d), *flat)
        return loss, grad.reshape(h.shape)

    @ce_sum.vjp
    def ce_sum_vjp(primals, cotangents, outputs):
        h, targets, weights = primals
        # the gradient w.r.t. h was made with the loss; the loss's cotangent scales it (the
        # stored gradient output gets no cotangent: nothing downstream uses it)
        return (
            (cotangents[0] * outputs[1]).astype(h.dtype),
            mx.zeros_like(targets),
            mx.zeros_like(weights),
        )

    return ce_sum


def chunked_token_loss_sum(
    model: nn.Module,
    inputs: mx.array,
    targets: mx.array,
    weights: mx.array,
    segments: mx.array | None = None,
) -> tuple[mx.array, mx.array]:
    """:func:`engine.train.step.token_loss_sum`, through :func:`_chunked_ce`."""
    from engine.train.step import record_masks

    parts = split_output(model)
    if parts is None:
        raise ValueError("chunked_token_loss_sum: the model has no body and output layer")
    body, head, head_module = parts
    h = body(inputs) if segments is None else body(inputs, cache=record_masks(model, segments))
    loss, _ = _chunked_ce(head, head_module.weight.shape[0])(h, targets, weights)
    return loss, weights.sum()


def takes_chunked_loss(model: nn.Module) -> bool:
    """Whether :func:`chunked_token_loss_sum` applies to ``model`` (see the module doc):
    body and head must give the model's own logits on a probe, the head must hold no
    trainable weight, and the logits must not be fp16."""
    parts = split_output(model)
    if parts is None:
        return False
    body, head, head_module = parts
    if tree_flatten(head_module.trainable_parameters()):
        return False  # its gradient would be lost
    probe = mx.array([[1, 5, 9, 13, 2, 7]], mx.int32)
    training = model.training
    model.eval()
    try:
        want, got = model(probe), head(body(probe))
        mx.eval(want, got)
    except Exception:  # noqa: BLE001 - a model that cannot be split keeps the plain loss
        return False
    finally:
        model.train(training)
    if want.dtype == mx.float16 or got.shape != want.shape:
        return False
    want, got = want.astype(mx.float32), got.astype(mx.float32)
    scale = float(mx.abs(want).max().item()) + 1e-6
    return float(mx.abs(got - want).max().item()) <= 1e-5 * scale


def loss_for(model: nn.Module) -> Callable[..., tuple[mx.array, mx.array]]:
    """The training loss for ``model``: the chunked one where it applies, else
    ``token_loss_sum``."""
    from engine.train.step import token_loss_sum

    if takes_chunked_loss(model):
        return chunked_token_loss_sum
    log.info("the loss makes the whole logits (the model's output layer is not a plain, "
             "frozen head, or it computes in fp16)")  # fmt: skip
    return token_loss_sum
