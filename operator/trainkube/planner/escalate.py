"""The next plan after an out-of-memory failure: one step that uses less memory, keeping the
global batch. First a smaller micro-batch with more accumulation, then activation
checkpointing, then the next configuration on the ladder (higher stage, then offload)."""

from __future__ import annotations

from dataclasses import replace

from trainkube.planner.memory import ladder
from trainkube.planner.plan import Overrides, Plan, PlanError, PlanRequest, plan


def escalate(request: PlanRequest, current: Plan) -> tuple[Plan, Overrides, str] | None:
    """The escalated plan, the overrides that produce it, and what changed; None at the top."""
    rung = current.rung
    same = Overrides(
        zero_stage=rung.stage,
        offload_optimizer=rung.offload_optimizer,
        offload_parameters=rung.offload_parameters,
        activation_checkpointing=current.activation_checkpointing,
    )
    per_rank = request.global_batch_size // request.ranks
    smaller = [m for m in range(current.micro_batch_size - 1, 0, -1) if per_rank % m == 0]
    if smaller:
        overrides = replace(same, micro_batch_size=smaller[0])
        what = (
            f"micro-batch {current.micro_batch_size} -> {smaller[0]} (accumulation "
            f"{current.gradient_accumulation_steps} -> {per_rank // smaller[0]})"
        )
        return plan(replace(request, overrides=overrides)), overrides, what
    if not current.activation_checkpointing:
        overrides = replace(same, activation_checkpointing=True, micro_batch_size=1)
        return plan(replace(request, overrides=overrides)), overrides, "activation checkpointing on"
    rungs = ladder(ranks=request.ranks, on_cpu=request.on_cpu)
    position = rungs.index(rung) if rung in rungs else -1
    for higher in rungs[position + 1 :]:
        overrides = Overrides(
            zero_stage=higher.stage,
            offload_optimizer=higher.offload_optimizer,
            offload_parameters=higher.offload_parameters,
        )
        try:
            found = plan(replace(request, overrides=overrides))
        except PlanError:
            continue
        return found, overrides, f"{rung.describe()} -> {higher.describe()}"
    return None
