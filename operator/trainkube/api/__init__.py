"""The trainkube API, group trainkube.io, version v1alpha1: one module per kind
(`llmtrainingjob`, `finetunejob`, `evaljob`), one per shared concern of their specs (`refs`,
`model`, `data`, `training`, `resources`, `parallelism`, `checkpoints`, `recovery`, `template`,
`tracking`, and `run`, which gathers them), status in `status`. These models are the single
source of truth: the CRDs in crds/ are generated from them (`trainkube crds`), and the operator
parses every object into them before any logic."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trainkube.api.base import ApiModel
from trainkube.api.evaljob import EvalJob
from trainkube.api.finetunejob import FineTuneJob
from trainkube.api.llmtrainingjob import LLMTrainingJob

GROUP = "trainkube.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "trainkube"


def _column(name: str, json_path: str, kind: str = "string", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, "jsonPath": json_path, **extra}


PHASE = _column("Phase", ".status.phase", description="one-word summary of the conditions")
STEPS = _column("Steps", ".status.progress.steps", description="optimizer steps done/total")
LOSS = _column("Loss", ".status.progress.loss", description="latest training loss")
STAGE = _column("Stage", ".status.plan.zeroStage", "integer", description="ZeRO stage")
AGE = _column("Age", ".metadata.creationTimestamp", "date")


@dataclass(frozen=True)
class Kind:
    """One custom resource kind: its model and the names and columns of its CRD."""

    model: type[ApiModel]
    kind: str
    plural: str
    short_names: tuple[str, ...]
    printer_columns: tuple[dict[str, Any], ...] = field(default=())

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


KINDS = (
    Kind(
        model=LLMTrainingJob,
        kind="LLMTrainingJob",
        plural="llmtrainingjobs",
        short_names=("ltj", "llmjob"),
        printer_columns=(
            PHASE,
            STEPS,
            LOSS,
            STAGE,
            _column("Nodes", ".spec.resources.nodes", "integer", priority=1),
            AGE,
        ),
    ),
    Kind(
        model=FineTuneJob,
        kind="FineTuneJob",
        plural="finetunejobs",
        short_names=("ftj", "finetune"),
        printer_columns=(
            PHASE,
            _column("Method", ".spec.method"),
            STEPS,
            LOSS,
            STAGE,
            AGE,
        ),
    ),
    Kind(
        model=EvalJob,
        kind="EvalJob",
        plural="evaljobs",
        short_names=("evj", "eval"),
        printer_columns=(
            PHASE,
            _column("Gates", ".status.gatesPassed", description="gates passed/total"),
            AGE,
        ),
    ),
)

__all__ = [
    "API_VERSION",
    "CATEGORY",
    "GROUP",
    "KINDS",
    "VERSION",
    "EvalJob",
    "FineTuneJob",
    "Kind",
    "LLMTrainingJob",
]
