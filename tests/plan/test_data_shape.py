"""The planner plans with the data's real widths: a batch is as wide as its longest item (the
sampler buckets by length, collate pads to the micro-batch's width), tokens/s counts trained
tokens, and the preflight's tokenization is reused instead of tokenizing twice. The bundled
demo model and dataset (stories260K, orchard_robot.jsonl) are tokenized for real."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from engine.config import JobSpec, resolve_model_path
from engine.data import BatchSampler, collate, prepare_data
from engine.model import inspect_model, load_tokenizer
from engine.plan import data_shape, workload_from_job
from engine.plan.data_shape import collate_width, item_lengths, lengths_for, shape_for, shape_of

PROBE = SimpleNamespace(matmul_gflops=50.0, free_memory_bytes=16 << 30, bandwidth_mb_s=1000.0,
                        rtt_ms=0.2)  # fmt: skip


@pytest.fixture(scope="module")
def demo():
    # the demo (stories260K on orchard_robot.jsonl, max_seq_len 512), records unpacked: packed
    # rows are all about max_seq_len wide (test_packed_rows_are_planned_as_packed)
    job = JobSpec().with_overrides(["data.packing=false"])
    tok = load_tokenizer(resolve_model_path(job.model.path))
    return job, prepare_data(job.data, tok, seed=job.run.seed)


def test_the_shape_is_what_collate_pads_the_samplers_batches_to(demo):
    job, data = demo
    items = item_lengths(data.train)
    for parts in (1, 3):
        shape = shape_of(items, job.run.batch_size, job.run.seed, parts=parts, steps=40)
        sampler = BatchSampler(data.train.lengths(), job.run.batch_size, seed=job.run.seed)
        padded = trained = seqs = widest = 0
        for step in range(min(40, max(sampler.steps_per_epoch, sampler.window))):
            for micro in sampler.micro_batches(step, 0, 1, parts):
                b = collate([data.train[i] for i in micro], data.pad_id)
                padded, seqs = padded + b.inputs.size, seqs + len(micro)
                trained += int(b.weights.sum())
                widest = max(widest, b.inputs.shape[1])
        assert shape.width == pytest.approx(padded / seqs)
        assert shape.trained == pytest.approx(trained / seqs)
        assert shape.longest == widest
    # the demo's items are ~215 tokens: far from max_seq_len 512, and a third of them prompt
    assert shape.width < 0.6 * job.data.max_seq_len
    assert shape.trained < 0.9 * shape.width


def test_the_workload_computes_padded_widths_and_counts_trained_tokens(demo):
    job, data = demo
    info = inspect_model(resolve_model_path(job.model.path))
    shape = shape_of(item_lengths(data.train), job.run.batch_size, job.run.seed)
    work = workload_from_job(job, info, data=shape)
    assert work.seq_len == pytest.approx(shape.width)
    assert work.work_tokens == pytest.approx(job.run.batch_size * shape.width)
    assert work.tokens == pytest.approx(job.run.batch_size * shape.trained)
    assert "measured from the" in work.data_note
    blind = workload_from_job(job, info)  # no data: max_seq_len, and it says so
    assert blind.seq_len == job.data.max_seq_len and blind.tokens == blind.work_tokens
    assert "max_seq_len 512" in blind.data_note
    assert work.flops_per_token < blind.flops_per_token  # attention at the real width
    assert work.bytes_per_sequence < blind.bytes_per_sequence  # the widest batch, not 512


def test_the_coordinators_plan_uses_the_data_and_counts_trained_tokens(demo):
    from engine.plan import resolve

    job, data = demo
    data_shape.remember(job, data.train)
    p = resolve.plan_for(job, [("10.0.0.5:1", PROBE), ("10.0.0.6:1", PROBE)], local=False)
    shape = shape_for(job, 2)
    assert p.work.seq_len == pytest.approx(shape.width)
    assert p.work.seq_len < job.data.max_seq_len
    b = p.best
    assert b.tokens_per_s * b.step_s == pytest.approx(job.run.batch_size * shape.trained)
    assert b.work_tokens_per_s * b.step_s == pytest.approx(job.run.batch_size * shape.width)
    assert b.work_tokens_per_s > b.tokens_per_s  # padding and prompts are computed too


def test_the_preflights_tokenization_is_reused(tmp_path, monkeypatch):
    from engine.preflight import preflight

    data = tmp_path / "chat.jsonl"
    data.write_text("".join(
        f'{{"messages": [{{"role": "user", "content": "tell me {i}"}}, '
        f'{{"role": "assistant", "content": "{" ".join(["apple"] * (3 + i % 40))}"}}]}}\n'
        for i in range(60)))  # fmt: skip
    job = JobSpec().with_overrides(
        [f'data.path="{data}"', "data.valid_fraction=0.0", "data.packing=false"]
    )
    result = preflight(job, local_memory=64 << 30)
    assert result.ok, result.message()
    assert len(result.lengths.lengths) == result.train_items == 60

    def no_second_tokenization(*_a, **_k):
        raise AssertionError("tokenized twice")

    monkeypatch.setattr("engine.data.prepare_data", no_second_tokenization)
    assert lengths_for(job) is result.lengths
    assert shape_for(job, 2).items == 60
    data.write_text(data.read_text() + data.read_text())  # changed since: measured afresh
    monkeypatch.undo()
    assert len(lengths_for(job).lengths) == 120


def test_a_dataset_that_cannot_be_read_plans_at_max_seq_len_and_says_why(tmp_path):
    job = JobSpec().with_overrides([f'data.path="{tmp_path / "missing.jsonl"}"',
                                    "data.max_seq_len=256"])  # fmt: skip
    shape = shape_for(job, 2)
    assert not shape.measured and shape.width == shape.trained == 256
    assert "max_seq_len 256" in shape.note and "could not be read" in shape.note


def test_widths_follow_the_longest_item_of_each_micro_batch():
    assert [collate_width(n) for n in (2, 9, 10, 33, 34, 300)] == [8, 8, 16, 32, 40, 320]  # n - 1
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 300, 500)
    items = data_shape.ItemLengths(lengths, lengths // 2)
    one = shape_of(items, batch_size=16, seed=0, parts=1)
    four = shape_of(items, batch_size=16, seed=0, parts=4)  # each micro-batch padded alone
    assert four.width < one.width < collate_width(int(lengths.max()))
    assert one.longest == four.longest == collate_width(int(lengths.max()))
    assert one.trained == pytest.approx(four.trained)  # padding is never trained
    assert one.width < 0.7 * 300  # bucketing by length: little padding


def test_packed_rows_are_planned_as_packed():
    """With packing (the default) the planner sees the rows the workers train on: several
    records to a row, each row near max_seq_len, and only the records' targets trained
    (a record's first-token flag is not a trained token)."""
    job = JobSpec()
    tok = load_tokenizer(resolve_model_path(job.model.path))
    packed = prepare_data(job.data, tok, seed=job.run.seed)
    plain = prepare_data(job.data, tok, seed=job.run.seed, packing=False)
    assert len(packed.train) < len(plain.train)
    p, q = item_lengths(packed.train), item_lengths(plain.train)
    assert p.trained.sum() == q.trained.sum()  # the same targets, however packed
    shape = shape_of(p, job.run.batch_size, job.run.seed)
    assert shape.width > 0.8 * job.data.max_seq_len
