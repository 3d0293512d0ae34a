"""The training settings users know from transformers' TrainingArguments: the README's mapping
agrees with each field's `kubectl explain` text, out-of-range values are refused with the field
named, the apply-time rules are in the CRDs, and the trainer's DeepSpeed config carries them out.
The apiserver's own refusals are checked in tests/cluster/test_api.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.trainer.runs import TINY
from trainkube.api import KINDS, crd
from trainkube.api.training import Training
from trainkube.planner import PlanRequest, plan, shape_of
from trainkube.planner.from_spec import _optimizer
from trainkube.planner.memory import GiB
from trainkube.runconfig import ModelRef, Plan, Reporting, RunConfig, Task
from trainkube_trainer.distributed import DistEnv
from trainkube_trainer.engine import deepspeed_config

README = Path(__file__).resolve().parents[2] / "README.md"
SPEC = crd.openapi_schema(next(k for k in KINDS if k.kind == "LLMTrainingJob"))["properties"][
    "spec"
]
BASE = {"maxSteps": 100, "globalBatchSize": 8, "learningRate": 1e-3}


def _mapping() -> list[tuple[str, str]]:
    """(TrainingArguments name, spec field) for each row of the README's table that names both."""
    section = README.read_text().split("## From transformers' TrainingArguments", 1)[1]
    rows = re.findall(r"^\| `(\w+)` \| `(\w+\.\w+)` \|", section.split("\n## ", 1)[0], re.M)
    assert len(rows) >= 15
    return rows


@pytest.mark.parametrize(("argument", "field"), _mapping())
def test_each_mapped_field_says_which_training_argument_it_is(argument: str, field: str) -> None:
    node: dict[str, Any] = SPEC
    for name in field.split("."):
        node = node["properties"][name]
    assert f"TrainingArguments.{argument}" in " ".join(node["description"].split())


REFUSED = [
    ({"warmupRatio": 1.0}, "warmupRatio", "less than 1"),
    ({"warmupRatio": -0.1}, "warmupRatio", "greater than or equal to 0"),
    ({"adamEpsilon": 0}, "adamEpsilon", "greater than 0"),
    ({"adamEpsilon": 2}, "adamEpsilon", "less than or equal to 1"),
    ({"gradientClipping": -1}, "gradientClipping", "greater than or equal to 0"),
    ({"logInterval": 0}, "logInterval", "greater than or equal to 1"),
    ({"evalInterval": -5}, "evalInterval", "greater than or equal to 0"),
]


@pytest.mark.parametrize(("values", "field", "message"), REFUSED, ids=[r[1] for r in REFUSED])
def test_training_settings_out_of_range_are_refused_with_the_field_named(
    values: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        Training.model_validate({**BASE, **values})
    (error,) = refused.value.errors()
    assert error["loc"] == (field,)
    assert message in error["msg"]


@pytest.mark.parametrize(
    ("field", "message"),
    [
        (".warmupRatio", "set warmupSteps or warmupRatio, not both"),
    ],
)
def test_the_crds_refuse_settings_that_contradict_each_other(field: str, message: str) -> None:
    rules = SPEC["properties"]["training"]["x-kubernetes-validations"]
    (rule,) = [r for r in rules if r.get("fieldPath") == field]
    assert rule["message"].startswith(message)


def test_warmup_ratio_counts_steps_of_the_run_rounded_up() -> None:
    training = Training.model_validate({**BASE, "warmupRatio": 0.03})
    assert training.warmup_for(100) == 3
    assert training.warmup_for(101) == 4
    assert Training.model_validate({**BASE, "warmupSteps": 7}).warmup_for(100) == 7


def _config(training: Training) -> RunConfig:
    """A run config with the plan the operator would make from `training`."""
    request = PlanRequest(
        shape=shape_of(TINY),
        sequence_length=64,
        global_batch_size=training.global_batch_size,
        nodes=1,
        gpus_per_node=0,
        gpu_memory=0,
        cpu_memory_per_node=4 * GiB,
        optimizer=_optimizer(training),
    )
    return RunConfig(
        task=Task.PRETRAIN,
        job="tests/settings",
        model=ModelRef(),
        training=training,
        plan=Plan(deepspeed=plan(request).deepspeed_config),
        reporting=Reporting(directory="/tmp/report"),
    )


def test_the_deepspeed_config_carries_warmup_ratio_epsilon_and_clipping() -> None:
    training = Training(
        epochs=2,
        global_batch_size=8,
        learning_rate=1e-3,
        warmup_ratio=0.1,
        adam_epsilon=1e-6,
        gradient_clipping=0.5,
    )
    env = DistEnv(rank=0, world_size=1, local_rank=0, on_cpu=True)
    # With epochs the steps are known only to the trainer: 250 here.
    ds = deepspeed_config(_config(training), env, total_steps=250, universal=False)
    assert ds["scheduler"]["params"]["warmup_num_steps"] == 25
    assert ds["scheduler"]["params"]["total_num_steps"] == 250
    assert ds["optimizer"]["params"]["eps"] == 1e-6
    assert ds["gradient_clipping"] == 0.5
