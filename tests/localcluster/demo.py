"""`make demo`: bring the local cluster up, install trainkube's CRDs, and show it working.

Until the operator and the trainer land, "working" means what the foundation and the API
provide: the CRDs installed, the example jobs accepted and listed by `kubectl get trainkube`
(with no status yet: no operator runs), a bad manifest refused with the field named, and the
real scheduler placing a 2-node, 16-GPU indexed Job (the shape trainkube gives a multi-node
DeepSpeed attempt) onto the fake GPU nodes. Each step prints what it does; the cluster stays up
for `kubectl` afterwards.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from tests.localcluster import nodes
from tests.localcluster.cluster import REPO_ROOT, ClusterError, LocalCluster

NAMESPACE = "trainkube-demo"
JOB = "demo-gang"
NODE_COLUMNS = (
    "NAME:.metadata.name,"
    r"GPUS:.status.capacity.nvidia\.com/gpu,"
    r"PRODUCT:.metadata.labels.nvidia\.com/gpu\.product,"
    "CPU:.status.capacity.cpu,MEMORY:.status.capacity.memory,"
    'READY:.status.conditions[?(@.type=="Ready")].status'
)


def _step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def _gang_job(*, workers: int, gpus_per_worker: int) -> dict[str, object]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": JOB, "namespace": NAMESPACE},
        "spec": {
            "completionMode": "Indexed",
            "completions": workers,
            "parallelism": workers,
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "worker",
                            "image": "trainkube/trainer:cpu",
                            "resources": {"limits": {nodes.GPU_RESOURCE: str(gpus_per_worker)}},
                        }
                    ],
                }
            },
        },
    }


def run(cluster: LocalCluster) -> None:
    _step("starting the local control plane (etcd, apiserver, controller-manager, scheduler, KWOK)")
    start = time.monotonic()
    started = cluster.up()
    verb = "started" if started else "reused the running cluster"
    print(f"{verb} in {time.monotonic() - start:.1f} s")

    crds = sorted(Path(REPO_ROOT / "crds").glob("*.yaml"))
    _step(f"installing trainkube CRDs ({len(crds)} in crds/)")
    for crd in crds:
        print(
            cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd)).strip()
        )
        name = yaml.safe_load(crd.read_text())["metadata"]["name"]
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=30s")

    _step("applying the example jobs (no operator runs yet, so they stay without status)")
    cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true")
    cluster.kubectl("create", "namespace", NAMESPACE)
    for example in sorted(Path(REPO_ROOT / "examples").glob("0[1-3]-*.yaml")):
        print(cluster.kubectl("apply", "-n", NAMESPACE, "-f", str(example)).strip())
    print(cluster.kubectl("get", "trainkube", "-n", NAMESPACE))

    _step("a bad manifest is refused at apply time, with the field named")
    bad = yaml.safe_load((REPO_ROOT / "examples" / "01-tiny-pretrain-cpu.yaml").read_text())
    bad["metadata"]["name"] = "bad-stage"
    bad["spec"]["parallelism"] = {"zeroStage": 4}
    try:
        cluster.kubectl("apply", "-n", NAMESPACE, "-f", "-", input_text=yaml.safe_dump(bad))
    except ClusterError as refused:
        print(str(refused).split("failed: ", 1)[-1])

    _step("GPU nodes (fake, played by KWOK) as the scheduler sees them")
    print(cluster.kubectl("get", "nodes", "-o", f"custom-columns={NODE_COLUMNS}"))

    _step("a 2-worker x 8-GPU indexed Job, placed by the real scheduler")
    cluster.kubectl(
        "wait", "--for=create", "serviceaccount/default", "-n", NAMESPACE, "--timeout=30s"
    )
    job = _gang_job(workers=2, gpus_per_worker=8)
    cluster.kubectl("apply", "-f", "-", input_text=yaml.safe_dump(job))
    cluster.kubectl(
        "wait", "--for=jsonpath={.status.ready}=2", f"job/{JOB}", "-n", NAMESPACE, "--timeout=60s"
    )
    print(cluster.kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide"))

    _step("both workers exit 0; the Job controller completes the Job")
    names = cluster.kubectl(
        "get", "pods", "-n", NAMESPACE, "-l", f"job-name={JOB}", "-o", "name"
    ).split()
    finish = [f"{key}={value}" for key, value in nodes.finish_annotations(exit_code=0).items()]
    for name in names:
        cluster.kubectl("annotate", "-n", NAMESPACE, name, *finish)
    cluster.kubectl(
        "wait", "--for=condition=Complete", f"job/{JOB}", "-n", NAMESPACE, "--timeout=60s"
    )
    print(cluster.kubectl("get", "job", JOB, "-n", NAMESPACE))

    _step("the cluster stays up; point kubectl at it with")
    print(f"export KUBECONFIG={cluster.kubeconfig}\nexport PATH={cluster.bin_dir}:$PATH")
    print("stop it with: make down")
