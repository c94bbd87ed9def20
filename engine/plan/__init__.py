"""The planner: from each Mac's probe and the job, predict every sync choice and pick one.

Qt-free and network-free: it takes plain numbers (engine/plan/inputs.py) and returns plain
data. ``plan()`` is the whole API; ``Tracker`` holds a plan against measured steps.
"""

from engine.plan.costs import Costs
from engine.plan.inputs import (
    Mac,
    Workload,
    lora_flops_per_token,
    mac_from_probe,
    workload_from_job,
)
from engine.plan.live import Tracker
from engine.plan.planner import ALL_MODES, Choice, Plan, Prediction, plan, split_by_speed
from engine.plan.table import format_plan

__all__ = [
    "ALL_MODES",
    "Choice",
    "Costs",
    "Mac",
    "Plan",
    "Prediction",
    "Tracker",
    "Workload",
    "format_plan",
    "lora_flops_per_token",
    "mac_from_probe",
    "plan",
    "split_by_speed",
    "workload_from_job",
]
