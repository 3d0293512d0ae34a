"""`make demo`: the local cluster, trainkube's CRDs and operator, and a multi-node job on it.

The local cluster's GPU nodes are fake (KWOK plays their kubelets), so nothing trains here
yet: the demo shows what the operator does with a job — plan, children, workers placed by the
real scheduler, status and Events — and ends the workers as a test would (by annotation,
labelled as such). Real CPU training through the operator needs the local node agent that runs
pod containers as processes (a later issue); `trainkube plan -f examples/` and the trainer's
own tests train for real. The cluster and the operator stay up for `kubectl` afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.localcluster import nodes
from tests.localcluster.cluster import REPO_ROOT, ClusterError, LocalCluster, running_pid

NAMESPACE = "trainkube-demo"
JOB = "llama-1b"
OPERATOR = "trainkube"


def _step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def _job() -> dict[str, object]:
    return {
        "apiVersion": "trainkube.io/v1alpha1",
        "kind": "LLMTrainingJob",
        "metadata": {"name": JOB},
        "spec": {
            "model": {
                "architecture": {
                    "layers": 16,
                    "hiddenSize": 2048,
                    "heads": 32,
                    "kvHeads": 8,
                    "vocabSize": 128256,
                    "contextLength": 4096,
                }
            },
            "data": {"builtin": "tiny-stories", "sequenceLength": 4096},
            "training": {"maxSteps": 20000, "globalBatchSize": 256, "learningRate": 3e-4},
            "resources": {
                "nodes": 2,
                "gpusPerNode": 8,
                "gpuMemory": "24Gi",
                "cpuMemoryPerNode": "512Gi",
            },
        },
    }


def start_operator(cluster: LocalCluster) -> None:
    """Run `trainkube operator` in the background (its pid file lets `make down` stop it)."""
    pid_file = cluster.layout.pids_dir / f"{OPERATOR}.pid"
    if running_pid(cluster.layout, OPERATOR) is not None:
        print("the operator is already running")
        return
    log = (cluster.layout.logs_dir / "operator.log").open("ab")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / OPERATOR),
            "operator",
            "--liveness=http://127.0.0.1:18080/healthz",
            "--metrics-port=19090",
        ],
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    pid_file.write_text(str(process.pid))
    print(f"operator started (log: {cluster.layout.logs_dir / 'operator.log'}, metrics on :19090)")


def _wait(cluster: LocalCluster, jsonpath: str, value: str, what: str, timeout_s: int = 90) -> None:
    cluster.kubectl(
        "wait",
        f"--for=jsonpath={jsonpath}={value}",
        f"llmtrainingjob/{JOB}",
        "-n",
        NAMESPACE,
        f"--timeout={timeout_s}s",
    )
    print(what)


def run(cluster: LocalCluster) -> None:
    _step("starting the local control plane (etcd, apiserver, controller-manager, scheduler, KWOK)")
    start = time.monotonic()
    started = cluster.up()
    verb = "started" if started else "reused the running cluster"
    print(f"{verb} in {time.monotonic() - start:.1f} s")

    _step("installing trainkube's CRDs and starting the operator")
    for crd in sorted(Path(REPO_ROOT / "crds").glob("*.yaml")):
        print(
            cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd)).strip()
        )
        name = yaml.safe_load(crd.read_text())["metadata"]["name"]
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=30s")
    start_operator(cluster)

    _step("the planner, offline: trainkube plan -f examples/")
    plan = subprocess.run(
        [str(Path(sys.executable).parent / "trainkube"), "plan", "-f", str(REPO_ROOT / "examples")],
        capture_output=True,
        text=True,
        check=False,
    )
    print(plan.stdout.strip())

    _step("a bad manifest is refused at apply time, with the field named")
    bad = yaml.safe_load((REPO_ROOT / "examples" / "01-tiny-pretrain-cpu.yaml").read_text())
    bad["spec"]["parallelism"] = {"zeroStage": 4}
    try:
        cluster.kubectl("apply", "--dry-run=server", "-f", "-", input_text=yaml.safe_dump(bad))
    except ClusterError as refused:
        print(str(refused).split("failed: ", 1)[-1])

    _step(f"a 1B Llama on 2 nodes x 8 GPUs of 24 GiB: kubectl apply -n {NAMESPACE}")
    cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true")
    cluster.kubectl("create", "namespace", NAMESPACE)
    cluster.kubectl(
        "wait", "--for=create", "serviceaccount/default", "-n", NAMESPACE, "--timeout=30s"
    )
    cluster.kubectl("apply", "-n", NAMESPACE, "-f", "-", input_text=yaml.safe_dump(_job()))
    _wait(cluster, "{.status.phase}", "Running", "all workers running")
    print(cluster.kubectl("get", "trainkube", "-n", NAMESPACE))
    print(cluster.kubectl("get", "jobs,pods,svc,configmaps", "-n", NAMESPACE, "-o", "wide"))
    plan_reason = cluster.kubectl(
        "get", "llmtrainingjob", JOB, "-n", NAMESPACE, "-o", "jsonpath={.status.plan.reason}"
    )
    print(f"plan: {plan_reason}")

    _step("the workers end with exit code 0 (simulated: the fake GPU nodes run nothing)")
    for pod in cluster.kubectl("get", "pods", "-n", NAMESPACE, "-o", "name").split():
        finish = [f"{k}={v}" for k, v in nodes.finish_annotations(exit_code=0).items()]
        cluster.kubectl("annotate", "-n", NAMESPACE, pod, *finish)
    _wait(cluster, "{.status.phase}", "Succeeded", "the job succeeded")
    described = cluster.kubectl("describe", "llmtrainingjob", JOB, "-n", NAMESPACE)
    print(described[described.index("Events:") :].strip())
    print(cluster.kubectl("get", "trainkube", "-n", NAMESPACE))

    _step("the cluster and the operator stay up; point kubectl at them with")
    print(f"export KUBECONFIG={cluster.kubeconfig}\nexport PATH={cluster.bin_dir}:$PATH")
    print("stop everything with: make down")
