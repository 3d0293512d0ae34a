"""References to things a job uses by name: a key in a Secret, a folder on a volume claim, the
output of another trainkube job. Every other spec module points at objects through these, so the
rules for names and paths (no '..' out of a volume) live in one place.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from trainkube.api.base import DNS_SUBDOMAIN, ApiModel

# A relative path whose segments are never "..": each segment starts with a character other
# than "." or "/", or is "." followed by one, or ".." followed by more, or is ".".
_SEGMENT = r"([^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+|\.)"
RELATIVE_PATH = rf"^({_SEGMENT}(/{_SEGMENT})*/?)?$"


class SecretKeyRef(ApiModel):
    """A key in a Secret in the job's namespace. The value is mounted into the pods, never
    copied into status, logs or ConfigMaps."""

    name: str = Field(
        description="name of the Secret in the job's namespace.",
        pattern=DNS_SUBDOMAIN,
        max_length=253,
    )
    key: str = Field(
        description="key inside the Secret whose value is used.",
        min_length=1,
        max_length=253,
    )


class VolumePath(ApiModel):
    """A path inside a PersistentVolumeClaim of the job's namespace."""

    claim_name: str = Field(
        description="claimName is the PersistentVolumeClaim, in the job's namespace, that holds "
        "the files.",
        pattern=DNS_SUBDOMAIN,
        max_length=253,
    )
    path: str = Field(
        default="",
        description="path inside the volume (relative, no '..'); empty means the volume's root.",
        max_length=1024,
        pattern=RELATIVE_PATH,
    )


class JobKind(StrEnum):
    LLM_TRAINING_JOB = "LLMTrainingJob"
    FINE_TUNE_JOB = "FineTuneJob"


class JobOutputRef(ApiModel):
    """The model another trainkube job wrote (its `status.output`), in the same namespace.
    The job using it waits until that job has succeeded."""

    kind: JobKind = Field(description="kind of the job whose output is used.")
    name: str = Field(
        description="name of that job in the same namespace.",
        pattern=DNS_SUBDOMAIN,
        max_length=253,
    )
