"""The benchmark's shared state (cluster, clients, options, namespaces) and the plain Indexed
Job the operator's workers are compared with."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import yaml

from tests.benchmarks.scale.counting import wait_controller_manager_quiet
from tests.benchmarks.scale.watch import GROUP, PLURAL, VERSION, Api, now
from tests.localcluster import nodes
from tests.localcluster.cluster import LocalCluster

# The worker of `_training_job(nodes_=1, gpus=1)` with the API's defaults.
WORKER_RESOURCES = {"cpu": "8", "memory": "64Gi", nodes.GPU_RESOURCE: "1"}


def plain_job(index: int) -> dict[str, Any]:
    """An Indexed Job shaped like one worker of `_training_job(nodes_=1, gpus=1)`."""
    labels = {"app.kubernetes.io/name": "plain-bench", "team": "research"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"plain-{index}", "labels": labels},
        "spec": {
            "completionMode": "Indexed",
            "completions": 1,
            "parallelism": 1,
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "trainer",
                            "image": "ghcr.io/trainkube/trainer:latest",
                            "command": ["sleep", "infinity"],
                            "resources": {
                                "requests": WORKER_RESOURCES,
                                "limits": WORKER_RESOURCES,
                            },
                        }
                    ],
                },
            },
        },
    }


class Bench:
    """What every step needs: the cluster, clients, options, and where logs go."""

    def __init__(
        self, cluster: LocalCluster, admin: Api, operator_cluster: LocalCluster, args: Any
    ) -> None:
        self.cluster, self.admin, self.operator_cluster, self.args = (
            cluster,
            admin,
            operator_cluster,
            args,
        )
        self.namespaces: list[str] = []
        self.log_dir = Path(args.log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def namespace(self, prefix: str, jobs: int) -> str:
        name = f"bench-{prefix}-{jobs}-{int(time.time())}"
        self.cluster.kubectl("create", "namespace", name)
        self.namespaces.append(name)
        self.cluster.kubectl("wait", "--for=create", "serviceaccount/default", "-n", name)
        return name

    def delete_namespace(self, name: str) -> float:
        """Delete it and wait until it is gone; the seconds that took (-1: not within the cap).

        The jobs, batch Jobs and pods go first, each as one delete-collection request, the pods
        with no grace period (KWOK's pods have no process to stop): the namespace controller
        alone would wait out every pod's 30 s grace period."""
        started = now()
        options = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        for path, grace in (
            (f"/apis/{GROUP}/{VERSION}/namespaces/{name}/{PLURAL}", {}),
            (f"/apis/batch/v1/namespaces/{name}/jobs", {}),
            (f"/api/v1/namespaces/{name}/pods", {"gracePeriodSeconds": 0}),
        ):
            with contextlib.suppress(RuntimeError):
                self.admin.request("DELETE", path, {**options, **grace})
        self.cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")
        while now() - started < self.args.cap_seconds:
            if not self.admin.exists(f"/api/v1/namespaces/{name}"):
                self.namespaces.remove(name)
                return round(now() - started, 1)
            time.sleep(1)
        return -1.0

    def wait_quiet(self) -> float:
        """Wait (at most the cap) until the controller-manager is idle; the seconds waited."""
        return wait_controller_manager_quiet(self.cluster.layout, self.args.cap_seconds)

    def apply(self, namespace: str, items: list[dict[str, Any]]) -> tuple[float, float]:
        """`kubectl apply` of `items` as one List: (when it started, seconds it took)."""
        body = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items})
        started = now()
        self.cluster.kubectl("apply", "-n", namespace, "-f", "-", input_text=body)
        return started, round(now() - started, 2)


def ratio_of(seconds: float | None, baseline: float | None) -> float | None:
    """`seconds` over `baseline`, to 2 places; None when either was capped (None) or 0."""
    return round(seconds / baseline, 2) if seconds and baseline else None
