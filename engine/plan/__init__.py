"""The planner: from each Mac's probe and the job, predict every sync choice and pick one.

Qt-free and network-free: it takes plain numbers (engine/plan/inputs.py) and returns plain
data. ``plan()`` is the whole API; ``Tracker`` holds a plan against measured steps. What
tokens/s and the scaling efficiency count is defined once, in engine/plan/efficiency.py.
"""

from engine.plan.costs import Costs
from engine.plan.data_shape import DataShape, shape_for
from engine.plan.efficiency import WorkerStep, measured_efficiency, scaling_efficiency
from engine.plan.inputs import (
    Mac,
    Workload,
    lora_flops_per_token,
    mac_from_probe,
    machine_macs,
    whole_machines,
    workload_from_job,
)
from engine.plan.live import Tracker
from engine.plan.planner import ALL_MODES, Choice, Plan, Prediction, plan, split_by_speed
from engine.plan.table import format_plan

__all__ = [
    "ALL_MODES",
    "Choice",
    "Costs",
    "DataShape",
    "Mac",
    "Plan",
    "Prediction",
    "Tracker",
    "WorkerStep",
    "Workload",
    "format_plan",
    "lora_flops_per_token",
    "mac_from_probe",
    "machine_macs",
    "measured_efficiency",
    "plan",
    "scaling_efficiency",
    "shape_for",
    "split_by_speed",
    "whole_machines",
    "workload_from_job",
]
