"""Checkpoints: how often a job saves, which saves it keeps, and the volume they go to (an
existing claim, or one the operator creates). Restarts and rollbacks resume from these.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from trainkube.api.base import ApiModel, IntOrAuto, Quantity, Rule, int_or_auto, memory, rules
from trainkube.api.refs import VolumePath


class WhenJobDeleted(StrEnum):
    RETAIN = "Retain"
    DELETE = "Delete"


class NewVolume(ApiModel):
    """A PersistentVolumeClaim the operator creates for the job's checkpoints (and, by default,
    its output), kept when the job is deleted unless whenJobDeleted says Delete."""

    size: Quantity = Field(
        description="requested size, with a unit, e.g. '500Gi'; at least 1Gi.",
        json_schema_extra=memory("checkpoints.createVolume.size", at_least="1Gi", example="500Gi"),
    )
    storage_class_name: str | None = Field(
        default=None, description="storage class; the cluster default when unset.", max_length=253
    )
    access_mode: str = Field(
        default="ReadWriteMany",
        description="access mode; every worker writes its shard, so multi-node jobs need "
        "ReadWriteMany.",
        pattern=r"^(ReadWriteOnce|ReadWriteMany|ReadWriteOncePod)$",
    )
    when_job_deleted: WhenJobDeleted = Field(
        default=WhenJobDeleted.RETAIN,
        description="what happens to the claim, and the checkpoints and model in it, when the "
        "job is deleted (by hand or by ttlSecondsAfterFinished): Retain keeps it (delete it "
        "yourself with kubectl delete pvc when done), Delete deletes it with the job.",
    )


class Checkpoints(ApiModel):
    """When to checkpoint, where, and which checkpoints to keep."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": rules(
            Rule(
                rule="!(has(self.volume) && has(self.createVolume))",
                message="checkpoints: set volume (an existing claim) or createVolume (a new "
                "one), not both",
                field_path=".createVolume",
            ),
        )
    }

    interval: IntOrAuto = Field(
        default=500,
        description="save a checkpoint every this many steps, or auto: the Young-Daly interval "
        "sqrt(2 x save time x MTBF), from this job's measured save and step times and its mean "
        "time between failures, chosen again after every save (status.checkpointInterval says "
        "what was chosen and why). A number is TrainingArguments.save_steps with "
        "save_strategy steps.",
        json_schema_extra=int_or_auto(minimum=1, what="checkpoints.interval"),
    )
    mtbf_hours: float | None = Field(
        default=None,
        description="for interval auto: the whole job's mean time between failures, hours. "
        "Unset: 5,700 node-hours (Llama 3's 16k-GPU run) divided by the nodes, refined by this "
        "job's own failures.",
        gt=0,
        le=1_000_000,
    )
    keep_last: int = Field(
        default=3,
        description="keep the newest K checkpoints. Same as TrainingArguments.save_total_limit.",
        ge=1,
        le=1000,
    )
    keep_every: int = Field(
        default=0,
        description="also keep every checkpoint whose step is a multiple of this (0: none).",
        ge=0,
    )
    volume: VolumePath | None = Field(
        default=None, description="an existing claim (and folder) for the checkpoints."
    )
    create_volume: NewVolume | None = Field(
        default=None, description="a claim the operator creates for this job's checkpoints."
    )
