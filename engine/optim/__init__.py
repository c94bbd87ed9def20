"""AdamW, learning-rate schedules, clipping and loss scaling. Knows nothing of the network."""

from engine.optim.adamw import AdamW, adamw_update, is_no_decay_name
from engine.optim.clip import clip_by_global_norm, clip_with_norm, global_norm, squared_norm
from engine.optim.flat_adamw import FlatAdamW, piece_sumsq, sumsq_pieces, total_sumsq
from engine.optim.flat_layout import FlatLayout
from engine.optim.loss_scale import DynamicLossScale, LossScaleState, all_finite
from engine.optim.schedule import SCHEDULES, learning_rate_at, make_schedule

__all__ = [
    "SCHEDULES",
    "AdamW",
    "DynamicLossScale",
    "FlatAdamW",
    "FlatLayout",
    "LossScaleState",
    "adamw_update",
    "all_finite",
    "clip_by_global_norm",
    "clip_with_norm",
    "global_norm",
    "is_no_decay_name",
    "learning_rate_at",
    "make_schedule",
    "piece_sumsq",
    "squared_norm",
    "sumsq_pieces",
    "total_sumsq",
]
