"""From a job spec to a plan request: shapes, LoRA counts, overrides, quantities."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trainkube.api.finetunejob import FineTuneJob
from trainkube.api.llmtrainingjob import LLMTrainingJob
from trainkube.api.model import ModelSource
from trainkube.api.refs import JobOutputRef
from trainkube.planner import Device, PlanError
from trainkube.planner.from_spec import request_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PRETRAIN = LLMTrainingJob.model_validate(
    yaml.safe_load((EXAMPLES / "01-tiny-pretrain-cpu.yaml").read_text())
)
LORA = FineTuneJob.model_validate(yaml.safe_load((EXAMPLES / "02-lora-finetune.yaml").read_text()))
BIG = LLMTrainingJob.model_validate(
    yaml.safe_load((EXAMPLES / "04-llama-7b-multinode.yaml").read_text())
)


def _nothing(ref: JobOutputRef) -> ModelSource | None:
    return None


def _pretrain(ref: JobOutputRef) -> ModelSource | None:
    return PRETRAIN.spec.model if ref.name == "tiny-pretrain" else None


def test_resources_and_overrides_come_from_the_spec() -> None:
    request = request_for(BIG, _nothing)
    assert (request.nodes, request.gpus_per_node) == (4, 8)
    assert request.gpu_memory == 80 * 1024**3
    assert request.cpu_memory_per_node == 1600 * 1024**3
    assert request.nvme_per_node == 3 * 1024**4
    assert request.overrides.zero_stage is None
    assert request_for(PRETRAIN, _nothing).overrides.zero_stage == 2


def test_forced_offload_is_read_as_a_device() -> None:
    manifest = yaml.safe_load((EXAMPLES / "04-llama-7b-multinode.yaml").read_text())
    manifest["spec"]["parallelism"] = {"offloadOptimizer": "cpu", "microBatchSize": 2}
    request = request_for(LLMTrainingJob.model_validate(manifest), _nothing)
    assert request.overrides.offload_optimizer is Device.CPU
    assert request.overrides.micro_batch_size == 2


def test_lora_trains_only_the_adapters_of_the_referenced_base() -> None:
    request = request_for(LORA, _pretrain)
    arch = PRETRAIN.spec.model.architecture
    assert arch is not None
    # rank 8 on q, k, v, o of a 64-wide model with 4 heads and no GQA: 8 x 2 x 64 per module.
    assert request.lora_parameters == arch.layers * 4 * 8 * (64 + 64)
    assert request.shape.hidden == 64


def test_unresolvable_from_job_is_refused_with_what_to_do() -> None:
    with pytest.raises(PlanError, match=r"create that job first, or set spec\.baseModel\.shape"):
        request_for(LORA, _nothing)


def test_hub_model_without_shape_is_refused_with_what_to_set() -> None:
    manifest = yaml.safe_load((EXAMPLES / "01-tiny-pretrain-cpu.yaml").read_text())
    manifest["spec"]["model"] = {"hub": {"id": "gpt2"}}
    job = LLMTrainingJob.model_validate(manifest)
    with pytest.raises(PlanError, match=r"set spec.model.shape \(layers, hiddenSize"):
        request_for(job, _nothing)
