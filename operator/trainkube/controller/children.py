"""The child objects of a job, built by pure functions from the job and one attempt's worker
spec. Every child is owned by the job (deletion cascades), named by `naming`, and labelled."""

from __future__ import annotations

import copy
import json
import math
from decimal import Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from trainkube.api.checkpoints import WhenJobDeleted
from trainkube.api.resources import Resources
from trainkube.api.template import PodTemplate
from trainkube.controller import layout, naming
from trainkube.controller.runspec import Job, WorkerSpec

MASTER_PORT = 29500
WORKER = "worker"
# The group of the trainer images' user: volumes that support it (not hostPath) are made
# writable for it, whatever user a volume's files belong to.
TRAINER_GROUP = 1000

# The `restricted` Pod Security Standard: a namespace that enforces it admits the workers.
POD_SECURITY = {
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
    "fsGroup": TRAINER_GROUP,
    "fsGroupChangePolicy": "OnRootMismatch",
}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def merged(base: dict[str, Any], over: dict[str, Any] | None) -> dict[str, Any]:
    """`base` with `over` laid on top: nested mappings merge, anything else is replaced."""
    result = copy.deepcopy(base)
    for key, value in (over or {}).items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _ids(body: dict[str, Any]) -> tuple[str, str]:
    """The job's kind and name, which every child name and label carries."""
    return body["kind"], body["metadata"]["name"]


def _meta(body: dict[str, Any], name: str, component: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": body["metadata"]["namespace"],
        "labels": naming.labels(
            kind=body["kind"], job=body["metadata"]["name"], component=component
        ),
        "ownerReferences": [naming.owner_reference(body)],
        **extra,
    }


def service(body: dict[str, Any]) -> dict[str, Any]:
    """The headless Service that gives every worker a stable DNS name (<pod>.<service>)."""
    kind, job = _ids(body)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(body, naming.service_name(kind, job), WORKER),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {**naming.selector(kind, job), naming.COMPONENT_LABEL: WORKER},
            "ports": [{"name": "rendezvous", "port": MASTER_PORT}],
        },
    }


def needs_service(resources: Resources) -> bool:
    """Whether the workers need the headless Service: only to find one another. A job of one
    worker rendezvouses on its own loopback, so it costs the cluster no Service, Endpoints
    and EndpointSlice (and the watches of kube-proxy and the DNS on them)."""
    return resources.nodes > 1


def _hosts(body: dict[str, Any], attempt: int, resources: Resources) -> list[str]:
    if not needs_service(resources):
        return ["localhost"]
    kind, job = _ids(body)
    pod_job = naming.attempt_job_name(kind, job, attempt)
    return [f"{pod_job}-{i}.{naming.service_name(kind, job)}" for i in range(resources.nodes)]


def run_config_map(
    body: dict[str, Any], *, attempt: int, spec: WorkerSpec, resources: Resources
) -> dict[str, Any]:
    """The attempt's run config, DeepSpeed config and hostfile, mounted at /etc/trainkube."""
    kind, job = _ids(body)
    slots = max(resources.gpus_per_node, 1)
    plan = spec.run_config.plan
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(body, naming.run_config_name(kind, job, attempt), WORKER),
        "data": {
            "run.json": spec.run_config.dump(),
            "deepspeed.json": json.dumps(plan.deepspeed if plan else {}, indent=2, sort_keys=True),
            "hostfile": "".join(f"{h} slots={slots}\n" for h in _hosts(body, attempt, resources)),
        },
    }


def report_config_map(body: dict[str, Any]) -> dict[str, Any]:
    """Where rank 0 reports progress (the only object the workers may write)."""
    meta = _meta(body, naming.report_name(*_ids(body)), "report")
    meta["labels"][naming.REPORT_LABEL] = "true"
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {}}


def worker_rbac(body: dict[str, Any], template: PodTemplate) -> list[dict[str, Any]]:
    """A ServiceAccount for the workers and a Role that lets them write their report only,
    bound to that account and to the one the template names, if any (its pods report too)."""
    kind, job = _ids(body)
    account = naming.account_name(kind, job)
    namespace = body["metadata"]["namespace"]
    subjects = [
        {"kind": "ServiceAccount", "name": name, "namespace": namespace}
        for name in dict.fromkeys([account, template.service_account_name or account])
    ]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(body, account, WORKER)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(body, account, WORKER),
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": [naming.report_name(kind, job)],
                    "verbs": ["get", "patch", "update"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(body, account, WORKER),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
            "subjects": subjects,
        },
    ]


def checkpoint_claim(body: dict[str, Any], job: Job) -> dict[str, Any] | None:
    """The PersistentVolumeClaim for checkpoints, when the spec asks for one to be created;
    owned by the job (deleted with it) only when whenJobDeleted says Delete."""
    checkpoints = getattr(job.spec, "checkpoints", None)
    if checkpoints is None or checkpoints.create_volume is None:
        return None
    volume = checkpoints.create_volume
    spec: dict[str, Any] = {
        "accessModes": [volume.access_mode],
        "resources": {"requests": {"storage": volume.size}},
    }
    if volume.storage_class_name:
        spec["storageClassName"] = volume.storage_class_name
    meta = _meta(body, naming.checkpoint_claim_name(*_ids(body)), "checkpoints")
    if volume.when_job_deleted is WhenJobDeleted.RETAIN:
        # Not owned: the claim, and the model in it, outlive the job. Applying it without the
        # reference also drops one an older operator set.
        del meta["ownerReferences"]
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec}


def _threads(cpus: str) -> int:
    """OpenMP threads for a CPU worker: its whole cores, at least one ('500m' -> 1)."""
    cores = Decimal(parse_quantity(cpus))  # type: ignore[no-untyped-call]
    return max(1, math.floor(cores))


def _container_resources(resources: Resources) -> dict[str, Any]:
    amounts: dict[str, Any] = {
        "cpu": resources.cpus_per_node,
        "memory": resources.cpu_memory_per_node,
    }
    if resources.gpus_per_node:
        amounts[resources.gpu_resource_name] = str(resources.gpus_per_node)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _volumes(
    body: dict[str, Any], attempt: int, spec: WorkerSpec, template: PodTemplate
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {
            "name": "run-config",
            "configMap": {"name": naming.run_config_name(*_ids(body), attempt)},
        },
        {"name": "shm", "emptyDir": {"medium": "Memory"}},
        {"name": "report", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "run-config", "mountPath": layout.RUN_CONFIG_DIR, "readOnly": True},
        {"name": "shm", "mountPath": layout.SHM},
        {"name": "report", "mountPath": layout.REPORT_DIR},
    ]
    for claim in {c.claim: c for c in spec.claims}.values():
        volumes.append(
            {"name": claim.volume_name, "persistentVolumeClaim": {"claimName": claim.claim}}
        )
    for claim in spec.claims:
        mounts.append(
            {"name": claim.volume_name, "mountPath": claim.mount_path, "readOnly": claim.read_only}
        )
    for secret, key in sorted(spec.secrets.items()):
        name = f"secret-{secret}"[:63].rstrip("-")
        volumes.append(
            {"name": name, "secret": {"secretName": secret, "items": [{"key": key, "path": key}]}}
        )
        mounts.append(
            {"name": name, "mountPath": f"{layout.SECRETS_ROOT}/{secret}", "readOnly": True}
        )
    for extra in template.volumes:
        volumes.append({"name": extra.name, **extra.source})
        mounts.append(
            {"name": extra.name, "mountPath": extra.mount_path, "readOnly": extra.read_only}
        )
    return volumes, mounts


def worker_command(body: dict[str, Any], *, attempt: int, resources: Resources) -> list[str]:
    """The deepspeed launcher without ssh: this pod's node rank is its completion index."""
    master = _hosts(body, attempt, resources)[0] if needs_service(resources) else "127.0.0.1"
    return [
        "deepspeed",
        f"--hostfile={layout.RUN_CONFIG_DIR}/hostfile",
        "--no_ssh",
        "--node_rank=$(JOB_COMPLETION_INDEX)",
        f"--master_addr={master}",
        f"--master_port={MASTER_PORT}",
        "--module",
        "trainkube_trainer",
        "--config",
        layout.RUN_CONFIG_FILE,
    ]


def _spread(pod_labels: dict[str, str]) -> dict[str, Any]:
    """Preferred anti-affinity between the workers of one attempt, per node."""
    selector = {
        k: pod_labels[k] for k in (naming.JOB_LABEL, naming.KIND_LABEL, naming.ATTEMPT_LABEL)
    }
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": selector},
                        "topologyKey": "kubernetes.io/hostname",
                    },
                }
            ]
        }
    }


def worker_job(
    body: dict[str, Any],
    job: Job,
    *,
    attempt: int,
    spec: WorkerSpec,
    image: str,
) -> dict[str, Any]:
    """One attempt: an Indexed Job of `nodes` pods that all run at once and never retry."""
    kind, name = _ids(body)
    resources: Resources = job.spec.resources
    template: PodTemplate = job.spec.template
    volumes, mounts = _volumes(body, attempt, spec, template)
    pod_labels = naming.labels(kind=kind, job=name, component=WORKER, extra=dict(template.labels))
    pod_labels[naming.ATTEMPT_LABEL] = str(attempt)
    env = [
        {
            "name": "OMP_NUM_THREADS",
            "value": "1" if resources.gpus_per_node else str(_threads(resources.cpus_per_node)),
        },
        {"name": "TRAINKUBE_JOB", "value": f"{body['metadata']['namespace']}/{name}"},
        {"name": "TRAINKUBE_ATTEMPT", "value": str(attempt)},
        *[e.to_wire() for e in template.env],
    ]
    container: dict[str, Any] = {
        "name": "trainer",
        "image": image,
        "command": worker_command(body, attempt=attempt, resources=resources),
        "env": env,
        "resources": _container_resources(resources),
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": merged(CONTAINER_SECURITY, template.security_context),
    }
    if template.image_pull_policy:
        container["imagePullPolicy"] = template.image_pull_policy
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": template.service_account_name or naming.account_name(kind, name),
        "containers": [container],
        "volumes": volumes,
        "securityContext": copy.deepcopy(POD_SECURITY),
    }
    if needs_service(resources):
        pod_spec["subdomain"] = naming.service_name(kind, name)
    if template.node_selector:
        pod_spec["nodeSelector"] = dict(template.node_selector)
    if template.tolerations:
        pod_spec["tolerations"] = [t.to_wire() for t in template.tolerations]
    # One worker per node where the cluster can: a worker is a node's worth of the job
    # (gpusPerNode). Preferred, not required, so workers that fit one node still run there.
    if template.affinity or resources.nodes > 1:
        pod_spec["affinity"] = template.affinity or _spread(pod_labels)
    if template.priority_class_name:
        pod_spec["priorityClassName"] = template.priority_class_name
    meta = _meta(body, naming.attempt_job_name(kind, name, attempt), WORKER)
    meta["labels"] = {**pod_labels}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "completionMode": "Indexed",
            "completions": resources.nodes,
            "parallelism": resources.nodes,
            "backoffLimit": 0,
            # A disrupted worker (evicted, preempted, its node gone) fails the attempt with a
            # Job condition that names it, which outlives the pod: such restarts spend no budget.
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    }
                ]
            },
            "template": {
                "metadata": {"labels": pod_labels, "annotations": dict(template.annotations)},
                "spec": pod_spec,
            },
        },
    }
