"""Benchmark: time from `kubectl apply` to all workers created (pods exist) and to all
workers Running (status), for 1 job and for 20 jobs at once, on the local cluster's KWOK GPU
nodes with the real operator.

    .venv/bin/python -m tests.benchmarks.operator_startup

Prints the numbers and writes tests/benchmarks/results/operator-startup.json.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

from tests.cluster.conftest import OperatorProcess
from tests.cluster.test_operator import _training_job
from tests.localcluster.cluster import LocalCluster

RESULTS = Path(__file__).resolve().parent / "results" / "operator-startup.json"
REPO = Path(__file__).resolve().parents[2]


def _measure(cluster: LocalCluster, api: Any, jobs: int, nodes: int) -> dict[str, Any]:
    namespace = f"bench-{jobs}-{int(time.time())}"
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("wait", "--for=create", "serviceaccount/default", "-n", namespace)
    items = [_training_job(f"job-{i}", nodes_=nodes, gpus=1) for i in range(jobs)]
    started = time.monotonic()
    cluster.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input_text=yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}),
    )
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    created = running = None
    while running is None and time.monotonic() - started < 300:
        pods = core.list_namespaced_pod(namespace).items
        if created is None and len(pods) == jobs * nodes:
            created = time.monotonic() - started
        listed: Any = custom.list_namespaced_custom_object(
            "trainkube.io", "v1alpha1", namespace, "llmtrainingjobs"
        )
        if all((j.get("status") or {}).get("phase") == "Running" for j in listed["items"]):
            running = time.monotonic() - started
        time.sleep(0.2)
    cluster.kubectl("delete", "namespace", namespace, "--wait=false")
    return {
        "jobs": jobs,
        "workersPerJob": nodes,
        "allWorkersCreatedSeconds": round(created or -1, 2),
        "allRunningSeconds": round(running or -1, 2),
    }


def main() -> None:
    cluster = LocalCluster.prepare()
    cluster.up()
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    config.load_kube_config(config_file=str(cluster.kubeconfig))
    api = client.ApiClient()
    with tempfile.TemporaryDirectory() as tmp:
        operator = OperatorProcess(cluster, Path(tmp) / "operator.log")
        operator.start()
        time.sleep(2)
        try:
            rows = [_measure(cluster, api, 1, 2), _measure(cluster, api, 20, 1)]
        finally:
            operator.stop()
    for row in rows:
        print(json.dumps(row))
    RESULTS.write_text(
        json.dumps(
            {
                "what": "apply -> pods created / status Running, KWOK GPU nodes, "
                "sweep interval 3 s",
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
