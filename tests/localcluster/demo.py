"""`make demo`: the whole chain on the built-in local cluster, for real, on the CPU.

The local cluster (control plane, KWOK GPU nodes and the real CPU node), the trainer image built
by images/build.sh and loaded into the node, trainkube's CRDs and the operator; then the
examples in order — a
tiny Llama pre-trained from scratch on 2 nodes with ZeRO-2, a LoRA fine-tune of its output, an
A/B evaluation of the two with gates — with a progress line while they run, and at the end
`kubectl get trainkube`, the evaluation results and where the models went. The cluster and the
operator stay up for `kubectl` afterwards; `make down` stops everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tests.localcluster.cluster import REPO_ROOT, ClusterError, LocalCluster, running_pid
from tests.localcluster.components import NODE_NAME, Component

NAMESPACE = "trainkube-demo"
EXAMPLES = ["01-tiny-pretrain-cpu.yaml", "02-lora-finetune.yaml", "03-ab-eval.yaml"]
JOBS = [("llmtrainingjob", "tiny-pretrain"), ("finetunejob", "tiny-lora"), ("evaljob", "tiny-ab")]


def _step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def _background(cluster: LocalCluster, name: str, argv: list[str]) -> None:
    """Start a long-running helper with a pid file (so `make down` stops it too)."""
    if running_pid(cluster.layout, name) is not None:
        print(f"{name} is already running")
        return
    helper = Component(name=name, argv=argv, env={"KUBECONFIG": str(cluster.kubeconfig)})
    cluster.start_process(helper)
    print(f"started {name} (log: {cluster.layout.logs_dir / f'{name}.log'})")


def _status(cluster: LocalCluster, kind: str, name: str) -> dict[str, Any]:
    text = cluster.kubectl("get", kind, name, "-n", NAMESPACE, "-o", "json")
    return dict(json.loads(text).get("status") or {})


def _progress_line(cluster: LocalCluster) -> tuple[str, bool]:
    parts, done = [], True
    for kind, name in JOBS:
        status = _status(cluster, kind, name)
        phase = status.get("phase") or "Pending"
        progress = status.get("progress") or {}
        detail = ""
        if progress.get("steps"):
            detail = f" {progress['steps']} loss {progress.get('loss', '-')}"
        if kind == "evaljob" and status.get("gatesPassed"):
            detail = f" gates {status['gatesPassed']}"
        parts.append(f"{name}: {phase}{detail}")
        done = done and phase in ("Succeeded", "Failed")
    return " | ".join(parts), done


def load_images(cluster: LocalCluster, images: str = "trainer-cpu") -> None:
    """Build the project's images (images/build.sh, cached) and load them into the CPU node."""
    build = REPO_ROOT / "images" / "build.sh"
    if not build.exists():
        raise ClusterError(f"{build} is missing: the trainer image cannot be built")
    result = subprocess.run(
        ["bash", str(build), *images.split()],
        stdout=subprocess.PIPE,
        stderr=sys.stderr,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ClusterError(f"{build} failed (see its output above)")
    archives = [Path(line) for line in result.stdout.splitlines() if line.strip()]
    for loaded in cluster.import_images(archives):
        verb = "already loaded" if loaded.skipped else "loaded"
        print(f"{verb}: {', '.join(loaded.images)} ({loaded.archive})")


def run(cluster: LocalCluster) -> None:
    _step("starting the local cluster (control plane, KWOK GPU nodes, the real CPU node)")
    start = time.monotonic()
    started = cluster.up()
    verb = "started" if started else "reused the running cluster"
    print(f"{verb} in {time.monotonic() - start:.1f} s")

    _step("building the trainer image (images/build.sh) and loading it into the CPU node")
    load_images(cluster)

    _step("installing trainkube's CRDs; starting the operator")
    for crd in sorted(Path(REPO_ROOT / "crds").glob("*.yaml")):
        print(
            cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd)).strip()
        )
        name = yaml.safe_load(crd.read_text())["metadata"]["name"]
        cluster.wait_condition("Established", f"crd/{name}", timeout_s=30)
    bin_dir = Path(sys.executable).parent
    _background(
        cluster,
        "trainkube",
        [
            str(bin_dir / "trainkube"),
            "operator",
            "--liveness=http://127.0.0.1:18080/healthz",
            "--metrics-port=19090",
        ],
    )
    cluster.wait_condition("Ready", f"node/{NODE_NAME}", timeout_s=60)
    print(cluster.kubectl("get", "nodes"))

    _step("what the planner chooses for each example (trainkube plan -f examples/)")
    plan = subprocess.run(
        [str(bin_dir / "trainkube"), "plan", "-f", str(REPO_ROOT / "examples")],
        capture_output=True,
        text=True,
        check=False,
    )
    print(
        "\n".join(
            line
            for line in plan.stdout.splitlines()
            if line.startswith(("LLM", "Fine", "Eval", "  plan:", "  why:"))
        )
    )

    _step("a bad manifest is refused at apply time, with the field named")
    bad = yaml.safe_load((REPO_ROOT / "examples" / EXAMPLES[0]).read_text())
    bad["spec"]["parallelism"] = {"zeroStage": 4}
    try:
        cluster.kubectl("apply", "--dry-run=server", "-f", "-", input_text=yaml.safe_dump(bad))
    except ClusterError as refused:
        print(str(refused).split("failed: ", 1)[-1])

    _step(f"kubectl apply -n {NAMESPACE} -f examples/ (pre-train, LoRA on its output, A/B eval)")
    cluster.kubectl(
        "delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", "--timeout=120s"
    )
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
    while time.monotonic() - began < 900:
        line, done = _progress_line(cluster)
        if line != last:
            print(f"[{time.monotonic() - began:5.0f} s] {line}", flush=True)
            last = line
        if done:
            break
        time.sleep(2)

    _report(cluster)


def _report(cluster: LocalCluster) -> None:
    _step("kubectl get trainkube")
    print(cluster.kubectl("get", "trainkube", "-n", NAMESPACE))
    _step("evaluation results, quality and latency (status.results and status.gates of tiny-ab)")
    evaluation = _status(cluster, "evaljob", "tiny-ab")
    for result in evaluation.get("results", []):
        baseline = f" (baseline {result['baseline']:.4g})" if "baseline" in result else ""
        name = f"{result['evaluation']}.{result['metric']}"
        setup = result.get("setup")
        measured = (
            f" [{setup['decoding']}, {setup['maxNewTokens']} new tokens, {setup['samples']} "
            f"samples after {setup['warmup']} warm-up, {setup['device']}]"
            if setup
            else ""
        )
        print(f"  {name}: {result['value']:.4g}{baseline}{measured}")
    for gate in evaluation.get("gates", []):
        verdict = "passed" if gate["passed"] else "FAILED"
        print(f"  gate {gate['metric']}: {verdict} - {gate['message']}")
    _step("where the models went (status.output; claims are folders in .localcluster/volumes)")
    for kind, name in JOBS[:2]:
        print(f"  {name}: {json.dumps(_status(cluster, kind, name).get('output'))}")
    _step("the cluster and the operator stay up; point kubectl at them with")
    print(f"export KUBECONFIG={cluster.kubeconfig}\nexport PATH={cluster.bin_dir}:$PATH")
    print(f"worker logs: kubectl logs -n {NAMESPACE} POD")
    print("stop everything with: make down")
