"""`trainkube plan`: plans for manifests on disk, printed for people."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from trainkube.api import KINDS
from trainkube.api.base import ApiModel
from trainkube.api.evaljob import EvalJob
from trainkube.api.finetunejob import FineTuneJob
from trainkube.api.llmtrainingjob import LLMTrainingJob
from trainkube.api.model import ModelSource
from trainkube.api.refs import JobOutputRef
from trainkube.planner.from_spec import _bytes, model_shape, request_for
from trainkube.planner.memory import human_bytes, human_count
from trainkube.planner.plan import Plan, PlanError, PlanRequest, plan

MODELS = {kind.kind: kind.model for kind in KINDS}
# The share of a GPU the trainer gives an evaluated model's weights (trainkube_trainer.inference).
OFFLOAD_SHARE = 0.8


def load_manifests(paths: list[Path]) -> list[ApiModel]:
    """Every trainkube object in the files (and folders) given, parsed into its model."""
    files = [
        p for path in paths for p in (sorted(path.glob("*.yaml")) if path.is_dir() else [path])
    ]
    jobs: list[ApiModel] = []
    for file in files:
        for document in yaml.safe_load_all(file.read_text()):
            if not document or document.get("kind") not in MODELS:
                continue
            try:
                jobs.append(MODELS[document["kind"]].model_validate(document))
            except ValidationError as error:
                raise PlanError(f"{file}: {error}") from error
    return jobs


def resolver(jobs: list[ApiModel]) -> Any:
    """Resolves fromJob references among `jobs` (the manifests given together)."""

    def resolve(ref: JobOutputRef) -> ModelSource | None:
        for job in jobs:
            if job.kind == ref.kind and job.metadata.get("name") == ref.name:  # type: ignore[attr-defined]
                if isinstance(job, LLMTrainingJob):
                    return job.spec.model
                if isinstance(job, FineTuneJob):
                    return job.spec.base_model
        return None

    return resolve


def describe(request: PlanRequest, result: Plan) -> list[str]:
    unit = "GPU" if not request.on_cpu else "node (CPU)"
    rung = result.rung
    states = result.states
    hb = human_bytes
    return [
        f"  model:    {human_count(result.parameters)} parameters, "
        f"{human_count(result.trainable_parameters)} trained; "
        f"{request.nodes} node(s) x {request.gpus_per_node} GPU(s), "
        f"{human_bytes(request.device_memory)} declared per {unit}",
        f"  plan:     ZeRO stage {rung.stage}, optimizer offload {rung.offload_optimizer}, "
        f"parameter offload {rung.offload_parameters}, activation checkpointing "
        f"{'on' if result.activation_checkpointing else 'off'}",
        f"  batch:    micro-batch {result.micro_batch_size} x {result.gradient_accumulation_steps}"
        f" accumulation x {result.data_parallel_size} ranks = {request.global_batch_size}",
        f"  per {unit}: parameters {hb(states.parameters)}, gradients {hb(states.gradients)}, "
        f"optimizer {hb(states.optimizer_states)}, activations {hb(result.activation_bytes)},"
        f" margin {hb(result.overhead_bytes)} = {hb(result.gpu_total)}",
        f"  per node: CPU {hb(states.cpu_per_node)} of {hb(request.cpu_memory_per_node)}"
        + (f", NVMe {hb(states.nvme_per_node)}" if states.nvme_per_node else ""),
        f"  why:      {result.reason}",
    ]


def _eval_lines(job: EvalJob, jobs: list[ApiModel]) -> list[str]:
    try:
        shape = model_shape(job.spec.model, resolver(jobs), field="spec.model")
    except PlanError as error:
        return [f"  cannot estimate: {error}"]
    resources = job.spec.resources
    weight = 4 if resources.gpus_per_node == 0 else 2
    lines = [
        f"  model:    {human_count(shape.parameters())} parameters; evaluation runs inference "
        "(no gradients or optimizer states)",
        f"  weights:  {human_bytes(weight * shape.parameters())} per rank, "
        + ("fp32 on the CPU" if weight == 4 else "16-bit on each GPU")
        + (" (and the same again for the baseline)" if job.spec.baseline else ""),
    ]
    gpu = _bytes(resources.gpu_memory) if resources.gpus_per_node else 0
    if gpu and weight * shape.parameters() > OFFLOAD_SHARE * gpu:
        lines.append(
            f"  offload:  more than {OFFLOAD_SHARE:.0%} of a {human_bytes(gpu)} GPU: the trainer "
            "loads it with Accelerate's big-model inference, the layers that do not fit in host "
            "memory (then on disk), moved in for each pass: the same results, slower"
        )
    return lines


def report(paths: list[Path], *, deepspeed: bool) -> tuple[str, bool]:
    """The text `trainkube plan` prints, and whether every job got a plan."""
    jobs = load_manifests(paths)
    if not jobs:
        return "no LLMTrainingJob, FineTuneJob or EvalJob in the files given", False
    lines: list[str] = []
    ok = True
    for job in jobs:
        lines.append(f"{job.kind} {job.metadata.get('name', '?')}:")  # type: ignore[attr-defined]
        if isinstance(job, EvalJob):
            lines += _eval_lines(job, jobs)
            continue
        assert isinstance(job, LLMTrainingJob | FineTuneJob)
        try:
            request = request_for(job, resolver(jobs))
            result = plan(request)
        except PlanError as error:
            lines.append(f"  refused:  {error}")
            ok = False
            continue
        lines += describe(request, result)
        if deepspeed:
            lines += [
                "  deepspeed config:",
                *("    " + ln for ln in json.dumps(result.deepspeed_config, indent=2).splitlines()),
            ]
    return "\n".join(lines), ok
