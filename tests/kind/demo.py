"""`make kind-demo`: the pre-train -> LoRA -> A/B chain on the kind cluster, for real.

The examples (examples/01..03, as `make demo` runs them on the local cluster) go into their own
namespace; the operator Helm installed runs each as Indexed Jobs of the CPU trainer image on the
two workers. At the end: `kubectl get trainkube`, the node each worker ran on, and the
evaluation. The cluster stays up; `make kind-down` removes it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tests.kind.cluster import KindCluster
from tests.kind.lifecycle import step
from tests.kind.settings import REPO_ROOT
from tests.localcluster.demo import EXAMPLES, JOBS, NAMESPACE

TIMEOUT_S = 1200.0
KIND_LABEL = "trainkube.io/kind"  # set on the Jobs and pods the operator makes (by kind name)


@dataclass(frozen=True)
class Outcome:
    phases: dict[str, str]  # job name -> phase
    worker_nodes: dict[str, list[str]]  # job name -> the nodes its worker pods ran on


def _phase(cluster: KindCluster, kind: str, name: str) -> tuple[str, dict[str, Any]]:
    status = cluster.kubectl_json("get", kind, name, "-n", NAMESPACE).get("status") or {}
    return str(status.get("phase") or "Pending"), status


def _line(cluster: KindCluster) -> tuple[str, bool]:
    parts, done = [], True
    for kind, name in JOBS:
        phase, status = _phase(cluster, kind, name)
        steps = (status.get("progress") or {}).get("steps")
        parts.append(f"{name}: {phase}" + (f" {steps} steps" if steps else ""))
        done = done and phase in ("Succeeded", "Failed")
    return " | ".join(parts), done


def worker_nodes(cluster: KindCluster) -> dict[str, list[str]]:
    """The nodes each job's worker pods were scheduled on, from the pods' owner Jobs' names
    (NAME-KIND-aN)."""
    found: dict[str, list[str]] = {}
    for pod in cluster.kubectl_json("get", "pods", "-n", NAMESPACE)["items"]:
        owner: dict[str, Any] = next(iter(pod["metadata"].get("ownerReferences") or []), {})
        for _, name in JOBS:
            if owner.get("kind") == "Job" and owner.get("name", "").startswith(f"{name}-"):
                found.setdefault(name, []).append(pod["spec"].get("nodeName", "?"))
    return {name: sorted(nodes) for name, nodes in found.items()}


def run(cluster: KindCluster) -> Outcome:
    step(f"kubectl apply -n {NAMESPACE} -f examples/ (pre-train, LoRA on its output, A/B eval)")
    cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--timeout=120s")
    cluster.kubectl("create", "namespace", NAMESPACE)
    cluster.kubectl(
        "wait", "--for=create", "serviceaccount/default", "-n", NAMESPACE, "--timeout=30s"
    )
    for example in EXAMPLES:
        print(
            cluster.kubectl(
                "apply", "-n", NAMESPACE, "-f", str(REPO_ROOT / "examples" / example)
            ).strip()
        )
    began, last = time.monotonic(), ""
    nodes: dict[str, list[str]] = {}
    while time.monotonic() - began < TIMEOUT_S:
        line, done = _line(cluster)
        nodes |= worker_nodes(cluster)  # pods of finished jobs may be deleted (TTL)
        if line != last:
            print(f"[{time.monotonic() - began:5.0f} s] {line}", flush=True)
            last = line
        if done:
            break
        time.sleep(3)
    step("kubectl get trainkube -A")
    print(cluster.kubectl("get", "trainkube", "-A"))
    step("the nodes each job's workers ran on")
    for name, names in nodes.items():
        print(f"  {name}: {', '.join(names)}")
    phases = {name: _phase(cluster, kind, name)[0] for kind, name in JOBS}
    return Outcome(phases=phases, worker_nodes=nodes)
