"""Experiment tracking: the Weights & Biases run rank 0 logs to, and the Secret holding its key."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from trainkube.api.base import ApiModel, Rule, rules
from trainkube.api.refs import SecretKeyRef


class WandbMode(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    DISABLED = "disabled"


class Tracking(ApiModel):
    """Weights & Biases tracking, from rank 0 only."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": rules(
            Rule(
                rule="self.mode != 'online' || has(self.apiKeySecretRef)",
                message="tracking.mode online needs apiKeySecretRef (a Secret holding the W&B API "
                "key); use mode offline to log without one",
                field_path=".apiKeySecretRef",
            ),
        )
    }

    project: str = Field(description="W&B project.", min_length=1, max_length=128)
    entity: str | None = Field(default=None, description="W&B entity (team or user).")
    mode: WandbMode = Field(
        default=WandbMode.ONLINE, description="online, offline (files only) or disabled."
    )
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None, description="the Secret key holding the W&B API key."
    )
    tags: list[str] = Field(default_factory=list, description="tags for the run.", max_length=64)
