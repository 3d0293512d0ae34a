"""The memory planner: ZeRO stage, offload, activation checkpointing and micro-batch from the
GPU memory a job declares. Pure functions, no cluster and no GPU; `trainkube plan -f job.yaml`
prints a plan and why."""

from trainkube.planner.memory import LADDER, Device, Rung
from trainkube.planner.plan import Overrides, Plan, PlanError, PlanRequest, plan
from trainkube.planner.shape import Shape, shape_of

__all__ = [
    "LADDER",
    "Device",
    "Overrides",
    "Plan",
    "PlanError",
    "PlanRequest",
    "Rung",
    "Shape",
    "plan",
    "shape_of",
]
