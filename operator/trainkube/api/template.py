"""How the worker pods look beyond what the operator owns: image, placement, labels,
tolerations, extra environment and volumes, in pod-spec terms a user already knows.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from trainkube.api.base import DNS_LABEL, ApiModel


class Toleration(ApiModel):
    """A toleration, as in a pod spec."""

    key: str | None = Field(default=None, description="taint key the toleration applies to.")
    operator: str | None = Field(
        default=None, description="Exists or Equal.", pattern=r"^(Exists|Equal)$"
    )
    value: str | None = Field(default=None, description="taint value to match.")
    effect: str | None = Field(
        default=None,
        description="NoSchedule, PreferNoSchedule or NoExecute; empty matches all.",
        pattern=r"^(NoSchedule|PreferNoSchedule|NoExecute)?$",
    )
    toleration_seconds: int | None = Field(
        default=None, description="for NoExecute: how long the pod stays bound."
    )


class EnvVar(ApiModel):
    """An environment variable for the trainer container, as in a pod spec."""

    name: str = Field(description="variable name.", min_length=1, max_length=256)
    value: str | None = Field(default=None, description="the value.")
    value_from: Annotated[
        dict[str, Any] | None,
        Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}),
    ] = Field(
        default=None,
        description="a source for the value (secretKeyRef, configMapKeyRef, fieldRef...), as "
        "in a pod spec.",
    )


class ExtraVolume(ApiModel):
    """A volume to add to the worker pods, and where the trainer container mounts it."""

    name: str = Field(description="volume name.", pattern=DNS_LABEL, max_length=63)
    mount_path: str = Field(description="mount path in the trainer container.", pattern=r"^/.*$")
    read_only: bool = Field(default=False, description="mount read-only.")
    source: Annotated[
        dict[str, Any],
        Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}),
    ] = Field(
        description="the volume source as in a pod spec, e.g. {persistentVolumeClaim: "
        "{claimName: datasets}} or {emptyDir: {}}.",
    )


class PodTemplate(ApiModel):
    """How the worker pods look: image, placement and additions. The operator owns the rest."""

    image: str | None = Field(
        default=None,
        description="trainer image; the operator's default (CUDA, or CPU-fallback when "
        "gpusPerNode is 0) when unset.",
        max_length=1024,
    )
    image_pull_policy: str | None = Field(
        default=None,
        description="Always, IfNotPresent or Never.",
        pattern=r"^(Always|IfNotPresent|Never)$",
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="labels added to the worker pods and their Job (e.g. "
        "kueue.x-k8s.io/queue-name).",
    )
    annotations: dict[str, str] = Field(
        default_factory=dict, description="annotations added to the worker pods."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="node labels the worker pods must match."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="tolerations of the worker pods.", max_length=64
    )
    affinity: Annotated[
        dict[str, Any] | None,
        Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}),
    ] = Field(default=None, description="affinity of the worker pods, as in a pod spec.")
    priority_class_name: str | None = Field(
        default=None, description="priority class of the worker pods.", max_length=253
    )
    service_account_name: str | None = Field(
        default=None,
        description="service account the worker pods run as; the operator's per-job account "
        "when unset. The job's report Role is bound to it too, so progress still reaches status.",
        max_length=253,
    )
    security_context: Annotated[
        dict[str, Any] | None,
        Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}),
    ] = Field(
        default=None,
        description="fields of the trainer container's securityContext, merged over the "
        "defaults that pass the restricted Pod Security Standard (no privilege escalation, all "
        "capabilities dropped, non-root, RuntimeDefault seccomp). Loosen only where hardware "
        "needs it, e.g. {capabilities: {add: [IPC_LOCK]}} for RDMA: the namespace must then "
        "allow it (pod-security.kubernetes.io/enforce: privileged), or no worker pod is created "
        "and the job's Running condition says why.",
    )
    env: list[EnvVar] = Field(
        default_factory=list, description="extra environment variables.", max_length=256
    )
    volumes: list[ExtraVolume] = Field(
        default_factory=list, description="extra volumes and their mounts.", max_length=64
    )
