"""Datasets: formats, detection, validation, tokenization with prompt masks, packing, sampling.

See engine/data/README.md for the formats and the choices made.
"""

from engine.data.collate import Batch, collate, pad_id_for
from engine.data.dataset import DatasetReadResult, read_dataset, read_file
from engine.data.inspect import DatasetReport, inspect_dataset, preview_record
from engine.data.pack import pack
from engine.data.prepare import PreparedData, prepare_data, split_records
from engine.data.problems import DatasetError, Problem, ProblemLog
from engine.data.records import Record
from engine.data.sampler import BatchSampler, eval_batches, split_batch
from engine.data.stats import DataStats, Histogram
from engine.data.templates import (
    Segment,
    TurnEnd,
    render_record,
    stop_at_turn_end,
    stop_token_ids,
    turn_end,
)
from engine.data.tokenize import TokenizedSet, encode_prompt, tokenize_record, tokenize_records

__all__ = [
    "Batch",
    "BatchSampler",
    "DataStats",
    "DatasetError",
    "DatasetReadResult",
    "DatasetReport",
    "Histogram",
    "PreparedData",
    "Problem",
    "ProblemLog",
    "Record",
    "Segment",
    "TokenizedSet",
    "TurnEnd",
    "collate",
    "encode_prompt",
    "eval_batches",
    "inspect_dataset",
    "pack",
    "pad_id_for",
    "prepare_data",
    "preview_record",
    "read_dataset",
    "read_file",
    "render_record",
    "split_batch",
    "split_records",
    "stop_at_turn_end",
    "stop_token_ids",
    "tokenize_record",
    "tokenize_records",
    "turn_end",
]
