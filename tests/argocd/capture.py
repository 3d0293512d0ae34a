"""Captures the testdata of the Argo CD health checks (charts/trainkube/argocd/trainkube.io/<Kind>/
testdata/*.yaml): real jobs on the local cluster, taken by the real operator through each state on
KWOK's GPU nodes, saved as `kubectl get -o yaml` prints them (kubectl leaves managedFields out).

    flock /tmp/trainkube-cluster.lock .venv/bin/python -m tests.argocd.capture [--only NAME...]

It starts the local cluster (or reuses one), runs `trainkube operator` with the cluster tests'
settings, and brings the cluster down at the end. KWOK pods run nothing, so the script does
what their trainer would, through the same channels: progress, checkpoints, divergence and
evaluation results go into the job's report ConfigMap through the trainer's own Reporter,
authenticated as the job's worker service account, and a worker ends through KWOK's finish
annotations (exit code and reason). No model is trained or evaluated: the steps, losses and metric
values in those reports are this script's, and the gate verdicts are the trainer's own rule
(trainkube_trainer.gates.check) applied to them. Every status field is written by the operator.

Each file starts with a comment that says how its state was reached.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

import trainkube
from tests.cluster.conftest import OperatorProcess, apply_manifests
from tests.cluster.test_operator import _training_job
from tests.localcluster import nodes
from tests.localcluster.cluster import LocalCluster, stop_helpers
from trainkube.api.evaljob import Gate
from trainkube.controller import naming
from trainkube_trainer import gates
from trainkube_trainer.reporting import ConfigMapSink, Reporter

REPO = Path(__file__).resolve().parents[2]
TESTDATA = REPO / "charts" / "trainkube" / "argocd" / "trainkube.io"
# The CRDs of the operator that runs (it may be imported from a worktree: see the README).
CRDS = Path(trainkube.__file__).resolve().parents[2] / "crds"
GROUP, VERSION = "trainkube.io", "v1alpha1"
PLURALS = {
    "LLMTrainingJob": "llmtrainingjobs",
    "FineTuneJob": "finetunejobs",
    "EvalJob": "evaljobs",
}
HOLD_FINALIZER = "trainkube.io/argocd-capture-hold"
T = TypeVar("T")

SHAPE = {
    "layers": 16,
    "hiddenSize": 2048,
    "heads": 32,
    "kvHeads": 8,
    "intermediateSize": 8192,
    "vocabSize": 128256,
    "contextLength": 2048,
}


def pretraining(name: str, **spec: Any) -> dict[str, Any]:
    """An LLMTrainingJob from scratch on 2 x 8 GPUs (the cluster tests' GPT-2-small job), 600
    steps."""
    manifest = _training_job(name, nodes_=2, gpus=8, **spec)
    manifest["spec"]["training"]["maxSteps"] = 600
    return manifest


def fine_tune(name: str, **spec: Any) -> dict[str, Any]:
    """A LoRA FineTuneJob of a 1B hub model on 1 x 8 GPUs, 200 steps."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": {
            "baseModel": {"hub": {"id": "meta-llama/Llama-3.2-1B"}, "shape": SHAPE},
            "method": "lora",
            "data": {
                "builtin": "tiny-instructions",
                "promptField": "prompt",
                "responseField": "response",
                "sequenceLength": 1024,
            },
            "training": {"maxSteps": 200, "globalBatchSize": 32, "learningRate": 2e-4},
            "resources": {"nodes": 1, "gpusPerNode": 8, "gpuMemory": "80Gi"},
            **spec,
        },
    }


EVAL_GATES = [
    {"metric": "held-out.perplexity", "maxRegression": 1.0},
    {"metric": "qa.exactMatch", "min": 0.3},
]


def evaluation(name: str, **spec: Any) -> dict[str, Any]:
    """An A/B EvalJob of a fine-tuned hub model against its base, with two gates."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "EvalJob",
        "metadata": {"name": name},
        "spec": {
            "model": {"hub": {"id": "example-org/Llama-3.2-1B-support"}},
            "baseline": {"hub": {"id": "meta-llama/Llama-3.2-1B"}},
            "evaluations": [
                {"name": "held-out", "perplexity": {"builtin": "tiny-stories"}},
                {"name": "qa", "exactMatch": {"builtin": "tiny-eval", "maxNewTokens": 8}},
            ],
            "gates": EVAL_GATES,
            "resources": {"nodes": 1, "gpusPerNode": 1, "gpuMemory": "80Gi"},
            **spec,
        },
    }


def _wait(what: str, probe: Callable[[], T | None], timeout_s: float = 60.0) -> T:
    """Poll `probe` until it returns something truthy (a 404 counts as not yet)."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            found = probe()
        except ApiException as error:
            if error.status != 404:
                raise
            last = f"404 {error.reason}"
        else:
            if found:
                return found
            last = found
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")


def _condition(job: dict[str, Any], kind: str) -> dict[str, Any]:
    conditions = (job.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), {})


@dataclass
class Capture:
    """One capture session: the cluster, an admin client, the operator process."""

    cluster: LocalCluster
    operator: OperatorProcess
    api: Any
    scratch: Path  # the operator's log and the reporters' folders
    testdata: Path = TESTDATA
    written: list[Path] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)

    @property
    def custom(self) -> Any:
        return client.CustomObjectsApi(self.api)

    @property
    def core(self) -> Any:
        return client.CoreV1Api(self.api)

    def namespace(self, name: str) -> str:
        """A fresh namespace (an old one of the same name, from an earlier run, is deleted)."""
        try:
            self.core.delete_namespace(name)
            _wait(f"namespace {name} deleted", lambda: not self._exists_namespace(name), 120)
        except ApiException as error:
            if error.status != 404:
                raise
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        self.namespaces.append(name)
        _wait(
            f"the default ServiceAccount of {name}",
            lambda: self.core.read_namespaced_service_account("default", name),
        )
        return name

    def clean_up(self) -> None:
        """Delete the namespaces made so far (their workers would hold GPUs the next need)."""
        while self.namespaces:
            self.core.delete_namespace(self.namespaces.pop())

    def _exists_namespace(self, name: str) -> bool:
        try:
            self.core.read_namespace(name)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    def apply(self, namespace: str, manifest: dict[str, Any]) -> None:
        apply_manifests(self.cluster, namespace, manifest)

    def job(self, namespace: str, kind: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURALS[kind], name
        )
        return found

    def until(
        self,
        namespace: str,
        kind: str,
        name: str,
        what: str,
        check: Callable[[dict[str, Any]], bool],
        timeout_s: float = 60.0,
    ) -> dict[str, Any]:
        """Wait until the job satisfies `check`; the job as it then is."""

        def probe() -> dict[str, Any] | None:
            job = self.job(namespace, kind, name)
            return job if check(job) else None

        return _wait(f"{kind} {namespace}/{name}: {what}", probe, timeout_s)

    def until_condition(
        self,
        namespace: str,
        kind: str,
        name: str,
        condition: str,
        status: str = "True",
        reason: str | None = None,
        timeout_s: float = 60.0,
    ) -> dict[str, Any]:
        def check(job: dict[str, Any]) -> bool:
            found = _condition(job, condition)
            return found.get("status") == status and reason in (None, found.get("reason"))

        what = f"{condition}={status}" + (f" ({reason})" if reason else "")
        return self.until(namespace, kind, name, what, check, timeout_s)

    def pods(self, namespace: str, kind: str, name: str) -> list[Any]:
        selector = ",".join(
            f"{k}={v}"
            for k, v in {**naming.selector(kind, name), naming.COMPONENT_LABEL: "worker"}.items()
        )
        found = self.core.list_namespaced_pod(namespace, label_selector=selector).items
        return sorted(found, key=lambda p: p.metadata.name)

    def finish(self, namespace: str, pod: Any, code: int, reason: str | None = None) -> None:
        """End a worker as its kubelet would: KWOK writes the terminated state."""
        annotations = nodes.finish_annotations(exit_code=code, reason=reason)
        self.core.patch_namespaced_pod(
            pod.metadata.name, namespace, {"metadata": {"annotations": annotations}}
        )

    def reporter(self, namespace: str, kind: str, name: str, attempt: int = 1) -> Reporter:
        """Rank 0's Reporter writing the job's report ConfigMap as the job's workers may."""
        account = naming.account_name(kind, name)
        token = self.core.create_namespaced_service_account_token(
            account,
            namespace,
            client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])),
        ).status.token
        configuration = client.Configuration()
        configuration.host = self.cluster.layout.server_url
        configuration.ssl_ca_cert = str(self.cluster.layout.pki_dir / "ca.crt")
        configuration.api_key = {"authorization": f"Bearer {token}"}
        sink = ConfigMapSink(
            naming.report_name(kind, name), namespace, api_client=client.ApiClient(configuration)
        )
        folder = Path(tempfile.mkdtemp(dir=self.scratch))
        reporter = Reporter(folder, enabled=True, min_interval=0, sink=sink)
        reporter.state["attempt"] = attempt  # as the trainer does: reports name their attempt
        return reporter

    def save(self, namespace: str, kind: str, name: str, file: str, how: str) -> None:
        """Write `kubectl get -o yaml` of the job to testdata, after a comment saying `how`."""
        text = self.cluster.kubectl("get", PLURALS[kind], name, "-n", namespace, "-o", "yaml")
        path = self.testdata / kind / "testdata" / file
        path.parent.mkdir(parents=True, exist_ok=True)
        comment = (
            "Captured by tests/argocd/capture.py from the local cluster (KWOK GPU nodes, the "
            f"trainkube operator) with `kubectl get {PLURALS[kind]} -o yaml`: {how}"
        )
        path.write_text(_comment(comment) + text)
        self.written.append(path)
        phase = (yaml.safe_load(text).get("status") or {}).get("phase", "no status")
        print(f"captured {path} ({phase})", flush=True)

    def hold(self, namespace: str, pod: Any) -> None:
        """A finalizer that keeps a deleted pod (and its attempt) alive until `release`."""
        self.core.patch_namespaced_pod(
            pod.metadata.name, namespace, {"metadata": {"finalizers": [HOLD_FINALIZER]}}
        )

    def release(self, namespace: str, pod: Any) -> None:
        """Remove the finalizer of `hold` (a JSON patch: the pod is being deleted)."""
        remove = [{"op": "remove", "path": "/metadata/finalizers"}]
        self.core.patch_namespaced_pod(pod.metadata.name, namespace, remove)


def _comment(text: str, width: int = 98) -> str:
    lines, line = [], "#"
    for word in text.split():
        if len(line) + 1 + len(word) > width:
            lines.append(line)
            line = "#"
        line += " " + word
    lines.append(line)
    return "\n".join(lines) + "\n"


# --- the states -------------------------------------------------------------------------------


def no_status(c: Capture) -> None:
    """All three kinds as applied, before any operator has looked at them."""
    c.operator.stop()
    ns = c.namespace("argocd-new")
    for kind, manifest in (
        ("LLMTrainingJob", pretraining("pretrain")),
        ("FineTuneJob", fine_tune("support-lora")),
        ("EvalJob", evaluation("support-ab")),
    ):
        name = manifest["metadata"]["name"]
        c.apply(ns, manifest)
        how = "applied while the operator was stopped: no status yet."
        c.save(ns, kind, name, "no-status.yaml", how)
    c.operator.start()


def running_edited_suspended(c: Capture, kind: str, manifest: dict[str, Any], ns: str) -> None:
    """Running (with progress for the training kinds), then edited (spec.suspend: true) while the
    operator is stopped, then suspended once the operator has observed the edit."""
    name = manifest["metadata"]["name"]
    c.namespace(ns)
    c.apply(ns, manifest)
    c.until_condition(ns, kind, name, "Running", reason="WorkersRunning")
    reporter = c.reporter(ns, kind, name)
    if kind == "EvalJob":
        reporter.progress(force=True, phase="evaluating", model="candidate")
        how = (
            "its worker Running on a KWOK node; the trainer's first report (evaluating the "
            "candidate) written by this script."
        )
    else:
        total = manifest["spec"]["training"]["maxSteps"]
        step = total // 5
        reporter.progress(
            step=step,
            totalSteps=total,
            loss=2.31,
            learningRate=2.9e-4,
            tokensPerSecond=182000.0,
            phase="training",
        )
        reporter.event("checkpoint", step=step, loss=2.31, path=f"step-{step}", bytes=2**30)
        c.until(
            ns,
            kind,
            name,
            f"progress at step {step}",
            lambda j: ((j.get("status") or {}).get("progress") or {}).get("step") == step,
        )
        how = (
            f"its workers Running on KWOK nodes; progress (step {step} of {total}, loss 2.31) "
            "and a checkpoint reported into its report ConfigMap by this script as the trainer."
        )
    c.save(ns, kind, name, "running.yaml", how)

    c.operator.stop()
    c.custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURALS[kind], name, {"spec": {"suspend": True}}
    )
    c.save(
        ns,
        kind,
        name,
        "edited-not-yet-observed.yaml",
        "the running job above, its spec then edited (suspend: true) while the operator was "
        "stopped: metadata.generation 2, status still of generation 1.",
    )
    c.operator.start()
    c.until(
        ns,
        kind,
        name,
        "suspended with workers stopped",
        lambda j: _condition(j, "Suspended").get("message") == "suspended: workers stopped",
    )
    c.save(
        ns,
        kind,
        name,
        "suspended.yaml",
        "the edited job above once the operator observed generation 2 and its workers stopped.",
    )


def ltj_running(c: Capture) -> None:
    running_edited_suspended(c, "LLMTrainingJob", pretraining("pretrain"), "argocd-ltj-running")


def ftj_running(c: Capture) -> None:
    running_edited_suspended(c, "FineTuneJob", fine_tune("support-lora"), "argocd-ftj-running")


def evj_running(c: Capture) -> None:
    running_edited_suspended(c, "EvalJob", evaluation("support-ab"), "argocd-evj-running")


def ltj_workers_starting(c: Capture) -> None:
    ns = c.namespace("argocd-ltj-quota")
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-pods"},
        "spec": {"hard": {"pods": "0"}},
    }
    c.apply(ns, quota)
    c.apply(ns, pretraining("pretrain"))
    c.until(
        ns,
        "LLMTrainingJob",
        "pretrain",
        "0/2 workers running",
        lambda j: _condition(j, "Running").get("message") == "0/2 workers running (attempt 1)",
    )
    c.save(
        ns,
        "LLMTrainingJob",
        "pretrain",
        "workers-starting.yaml",
        "attempt 1's batch Job created, its pods not yet (a ResourceQuota of 0 pods in the "
        "namespace holds them back, so the state stays long enough to be captured).",
    )


def ltj_child_forbidden(c: Capture) -> None:
    ns = c.namespace("argocd-ltj-forbidden")
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-batch-jobs"},
        "spec": {"hard": {"count/jobs.batch": "0"}},
    }
    c.apply(ns, quota)
    c.apply(ns, pretraining("pretrain"))
    c.until_condition(ns, "LLMTrainingJob", "pretrain", "Running", "False", "ChildRejected")
    c.save(
        ns,
        "LLMTrainingJob",
        "pretrain",
        "child-forbidden.yaml",
        "a ResourceQuota of 0 batch Jobs in the namespace: the apiserver refuses attempt 1's "
        "Job (403), and the operator tries again every 15 s.",
    )


def ltj_unschedulable(c: Capture) -> None:
    ns = c.namespace("argocd-ltj-unschedulable")
    template = {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-B200"}}
    c.apply(ns, pretraining("pretrain", template=template))
    c.until_condition(ns, "LLMTrainingJob", "pretrain", "Running", "False", "Unschedulable")
    c.save(
        ns,
        "LLMTrainingJob",
        "pretrain",
        "unschedulable.yaml",
        "spec.template.nodeSelector asks for a GPU product no node has: the scheduler cannot "
        "place the workers.",
    )


def secret_missing(c: Capture, kind: str, manifest: dict[str, Any], ns: str) -> None:
    name = manifest["metadata"]["name"]
    c.namespace(ns)
    c.apply(ns, manifest)
    c.until_condition(ns, kind, name, "Running", "False", "SecretNotFound")
    c.save(
        ns,
        kind,
        name,
        "secret-missing.yaml",
        "its model's tokenSecretRef names a Secret that does not exist.",
    )


def ltj_secret_missing(c: Capture) -> None:
    manifest = pretraining("pretrain")
    manifest["spec"]["model"] = {
        "hub": {"id": "meta-llama/Llama-3.2-1B"},
        "shape": SHAPE,
        "tokenSecretRef": {"name": "hf-token", "key": "token"},
    }
    secret_missing(c, "LLMTrainingJob", manifest, "argocd-ltj-secret")


def evj_secret_missing(c: Capture) -> None:
    manifest = evaluation("support-ab")
    manifest["spec"]["model"]["tokenSecretRef"] = {"name": "hf-token", "key": "token"}
    secret_missing(c, "EvalJob", manifest, "argocd-evj-secret")


def ltj_restarting(c: Capture) -> None:
    ns = c.namespace("argocd-ltj-restarting")
    policy = {"maxRestarts": 3, "backoffSeconds": 600}
    c.apply(ns, pretraining("pretrain", failurePolicy=policy))
    c.until_condition(ns, "LLMTrainingJob", "pretrain", "Running", reason="WorkersRunning")
    c.finish(ns, c.pods(ns, "LLMTrainingJob", "pretrain")[1], 1)
    c.until_condition(ns, "LLMTrainingJob", "pretrain", "Running", "False", "Restarting")
    c.save(
        ns,
        "LLMTrainingJob",
        "pretrain",
        "restarting.yaml",
        "worker 1 exited with code 1 (failurePolicy: maxRestarts 3, backoffSeconds 600): the "
        "restart waits out its back-off.",
    )


def ltj_rolling_back(c: Capture) -> None:
    ns = c.namespace("argocd-ltj-rollback")
    kind, name = "LLMTrainingJob", "pretrain"
    c.apply(ns, pretraining(name, rollback={"stepsBack": 100}))
    c.until_condition(ns, kind, name, "Running", reason="WorkersRunning")
    reporter = c.reporter(ns, kind, name)
    for step, loss in ((100, 2.64), (200, 2.41)):
        reporter.event("checkpoint", step=step, loss=loss, path=f"step-{step}", bytes=2**30)
    reporter.progress(step=310, totalSteps=600, loss=9.87, phase="training")
    divergence = {"step": 310, "loss": 9.87, "rule": "spike: loss > mean + 6 sigma"}
    reporter.event("diverged", **divergence)
    reporter.result(outcome="diverged", exit_code=10, divergence=divergence)
    c.until(
        ns,
        kind,
        name,
        "two checkpoints in status",
        lambda j: len((j.get("status") or {}).get("checkpoints") or []) == 2,
    )
    workers = c.pods(ns, kind, name)
    c.hold(ns, workers[1])
    c.finish(ns, workers[0], 10)
    c.until_condition(ns, kind, name, "RollingBack", reason="RollingBack")
    c.save(
        ns,
        kind,
        name,
        "rolling-back.yaml",
        "checkpoints at steps 100 and 200 and a loss spike at step 310 reported by this script "
        "as the trainer, then worker 0 exited with code 10 (diverged): the operator rolls back. "
        "A finalizer held worker 1 while this was captured, so attempt 2 waits for it to stop.",
    )
    c.release(ns, workers[1])
    c.until_condition(ns, kind, name, "RollingBack", "False", "Resumed")


def ltj_failed_restarts_exhausted(c: Capture) -> None:
    ns = c.namespace("argocd-ltj-oom")
    c.apply(ns, pretraining("pretrain", failurePolicy={"maxRestarts": 0}))
    c.until_condition(ns, "LLMTrainingJob", "pretrain", "Running", reason="WorkersRunning")
    c.finish(ns, c.pods(ns, "LLMTrainingJob", "pretrain")[1], 137, "OOMKilled")
    c.until_condition(ns, "LLMTrainingJob", "pretrain", "Failed")
    c.save(
        ns,
        "LLMTrainingJob",
        "pretrain",
        "failed-restarts-exhausted.yaml",
        "worker 1 was OOMKilled (exit code 137) with failurePolicy.maxRestarts 0.",
    )


def ltj_failed_does_not_fit(c: Capture) -> None:
    ns = c.namespace("argocd-ltj-does-not-fit")
    manifest = pretraining("llama-70b")
    manifest["spec"]["model"]["architecture"] = {
        "layers": 80,
        "hiddenSize": 8192,
        "heads": 64,
        "kvHeads": 8,
        "intermediateSize": 28672,
        "vocabSize": 32000,
        "contextLength": 2048,
    }
    manifest["spec"]["resources"] = {"nodes": 1, "gpusPerNode": 1, "gpuMemory": "80Gi"}
    c.apply(ns, manifest)
    c.until_condition(ns, "LLMTrainingJob", "llama-70b", "Failed", reason="DoesNotFit")
    c.save(
        ns,
        "LLMTrainingJob",
        "llama-70b",
        "failed-does-not-fit.yaml",
        "a 70B model on one 80 GiB GPU: the planner finds no plan that fits.",
    )
    c.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        ns,
        "llmtrainingjobs",
        "llama-70b",
        {"spec": {"activeDeadlineSeconds": 3600}},
    )
    c.until(
        ns,
        "LLMTrainingJob",
        "llama-70b",
        "observedGeneration 2",
        lambda j: (j.get("status") or {}).get("observedGeneration") == 2,
    )
    c.save(
        ns,
        "LLMTrainingJob",
        "llama-70b",
        "failed-then-edited.yaml",
        "the failed job above after an edit of its spec (activeDeadlineSeconds): the operator "
        "moved status.observedGeneration to 2; the Failed condition keeps generation 1.",
    )


def succeeded(c: Capture, kind: str, manifest: dict[str, Any], ns: str) -> None:
    name = manifest["metadata"]["name"]
    c.namespace(ns)
    c.apply(ns, manifest)
    c.until_condition(ns, kind, name, "Running", reason="WorkersRunning")
    total = manifest["spec"]["training"]["maxSteps"]
    reporter = c.reporter(ns, kind, name)
    reporter.event("checkpoint", step=total, loss=1.2345, path=f"step-{total}", bytes=2**30)
    reporter.progress(step=total, totalSteps=total, loss=1.2345, phase="training", force=True)
    reporter.progress(force=True, phase="done")
    reporter.result(outcome="succeeded", exit_code=0)
    c.until(
        ns,
        kind,
        name,
        f"progress at step {total}",
        lambda j: ((j.get("status") or {}).get("progress") or {}).get("step") == total,
    )
    for pod in c.pods(ns, kind, name):
        c.finish(ns, pod, 0)
    c.until_condition(ns, kind, name, "Succeeded")
    c.save(
        ns,
        kind,
        name,
        "succeeded.yaml",
        f"the last step ({total}, loss 1.2345) and checkpoint reported by this script as the "
        "trainer, then every worker exited with code 0.",
    )


def ltj_succeeded(c: Capture) -> None:
    succeeded(c, "LLMTrainingJob", pretraining("pretrain"), "argocd-ltj-succeeded")


def ftj_succeeded(c: Capture) -> None:
    succeeded(c, "FineTuneJob", fine_tune("support-lora"), "argocd-ftj-succeeded")


def ftj_waiting_for_base_job(c: Capture) -> None:
    ns = c.namespace("argocd-ftj-base")
    manifest = fine_tune("support-lora")
    manifest["spec"]["baseModel"] = {"fromJob": {"kind": "LLMTrainingJob", "name": "pretrain"}}
    c.apply(ns, manifest)
    c.until_condition(ns, "FineTuneJob", "support-lora", "Planned", "False", "WaitingForInput")
    c.save(
        ns,
        "FineTuneJob",
        "support-lora",
        "waiting-for-base-job.yaml",
        "its baseModel.fromJob names an LLMTrainingJob that does not exist (yet).",
    )


def ftj_volume_missing(c: Capture) -> None:
    ns = c.namespace("argocd-ftj-volume")
    manifest = fine_tune("support-lora")
    manifest["spec"]["baseModel"] = {
        "volume": {"claimName": "base-models", "path": "llama-3.2-1b"},
        "shape": SHAPE,
    }
    c.apply(ns, manifest)
    c.until_condition(ns, "FineTuneJob", "support-lora", "Running", "False", "VolumeNotFound")
    c.save(
        ns,
        "FineTuneJob",
        "support-lora",
        "volume-missing.yaml",
        "its baseModel.volume names a PersistentVolumeClaim that does not exist.",
    )


def ftj_failed_deadline(c: Capture) -> None:
    ns = c.namespace("argocd-ftj-deadline")
    c.apply(ns, fine_tune("support-lora", activeDeadlineSeconds=5))
    c.until_condition(ns, "FineTuneJob", "support-lora", "Failed", reason="DeadlineExceeded")
    c.save(
        ns,
        "FineTuneJob",
        "support-lora",
        "failed-deadline-exceeded.yaml",
        "activeDeadlineSeconds 5 passed while its worker ran.",
    )


def evaluated(
    c: Capture, ns: str, candidate: dict[str, float], baseline: dict[str, float]
) -> tuple[str, int]:
    """An EvalJob whose worker reports these metrics and the trainer's gate verdicts on them,
    then exits as the trainer would (0, or 12 when a gate failed). Returns (name, exit code)."""
    kind, name = "EvalJob", "support-ab"
    c.namespace(ns)
    c.apply(ns, evaluation(name))
    c.until_condition(ns, kind, name, "Running", reason="WorkersRunning")
    verdicts = gates.check([Gate.model_validate(g) for g in EVAL_GATES], candidate, baseline)
    results = {
        "results": [
            {
                "evaluation": key.split(".", 1)[0],
                "metric": key.split(".", 1)[1],
                "value": value,
                **({"baseline": baseline[key]} if key in baseline else {}),
            }
            for key, value in candidate.items()
        ],
        "gates": [{"metric": v.metric, "passed": v.passed, "message": v.message} for v in verdicts],
        "gatesPassed": f"{sum(v.passed for v in verdicts)}/{len(verdicts)}",
    }
    code = 0 if all(v.passed for v in verdicts) else 12
    reporter = c.reporter(ns, kind, name)
    reporter.progress(force=True, phase="done", **results)
    reporter.result(outcome="succeeded" if code == 0 else "gatesFailed", exit_code=code)
    c.until(
        ns,
        kind,
        name,
        "gate verdicts in status",
        lambda j: bool((j.get("status") or {}).get("gatesPassed")),
    )
    c.finish(ns, c.pods(ns, kind, name)[0], code)
    c.until_condition(ns, kind, name, "Succeeded" if code == 0 else "Failed")
    return name, code


EVAL_NOTE = (
    "No model was evaluated: the metric values are this script's, reported as the trainer "
    "reports them; the gate verdicts are the trainer's gate rule (trainkube_trainer.gates.check) "
    "applied to them; the status, gates included, is the operator's."
)


def evj_gates_passed(c: Capture) -> None:
    ns = "argocd-evj-passed"
    candidate = {"held-out.perplexity": 12.42, "qa.exactMatch": 0.41}
    baseline = {"held-out.perplexity": 12.87, "qa.exactMatch": 0.35}
    name, _ = evaluated(c, ns, candidate, baseline)
    c.save(
        ns,
        "EvalJob",
        name,
        "succeeded-gates-passed.yaml",
        "results that pass both gates reported by this script as the trainer, then its worker "
        f"exited with code 0. {EVAL_NOTE}",
    )


def evj_gates_failed(c: Capture) -> None:
    ns = "argocd-evj-gates"
    candidate = {"held-out.perplexity": 14.93, "qa.exactMatch": 0.36}
    baseline = {"held-out.perplexity": 12.87, "qa.exactMatch": 0.35}
    name, _ = evaluated(c, ns, candidate, baseline)
    c.save(
        ns,
        "EvalJob",
        name,
        "failed-gates.yaml",
        "results that fail one of the two gates (held-out.perplexity) reported by this script "
        "as the trainer, then its worker exited with code 12 (gates failed), as the trainer "
        f"does. {EVAL_NOTE}",
    )


def evj_failed_worker(c: Capture) -> None:
    ns = c.namespace("argocd-evj-crash")
    c.apply(ns, evaluation("support-ab"))
    c.until_condition(ns, "EvalJob", "support-ab", "Running", reason="WorkersRunning")
    c.finish(ns, c.pods(ns, "EvalJob", "support-ab")[0], 1)
    c.until_condition(ns, "EvalJob", "support-ab", "Failed")
    c.save(
        ns,
        "EvalJob",
        "support-ab",
        "failed-worker.yaml",
        "its worker exited with code 1 before any result.",
    )


STATES: dict[str, Callable[[Capture], None]] = {
    "no-status": no_status,
    "ltj-running": ltj_running,
    "ltj-workers-starting": ltj_workers_starting,
    "ltj-child-forbidden": ltj_child_forbidden,
    "ltj-unschedulable": ltj_unschedulable,
    "ltj-secret-missing": ltj_secret_missing,
    "ltj-restarting": ltj_restarting,
    "ltj-rolling-back": ltj_rolling_back,
    "ltj-failed-restarts-exhausted": ltj_failed_restarts_exhausted,
    "ltj-failed-does-not-fit": ltj_failed_does_not_fit,
    "ltj-succeeded": ltj_succeeded,
    "ftj-running": ftj_running,
    "ftj-waiting-for-base-job": ftj_waiting_for_base_job,
    "ftj-volume-missing": ftj_volume_missing,
    "ftj-failed-deadline": ftj_failed_deadline,
    "ftj-succeeded": ftj_succeeded,
    "evj-running": evj_running,
    "evj-secret-missing": evj_secret_missing,
    "evj-gates-passed": evj_gates_passed,
    "evj-gates-failed": evj_gates_failed,
    "evj-failed-worker": evj_failed_worker,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.argocd.capture", description=__doc__)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=sorted(STATES),
        metavar="STATE",
        help=f"capture only these states, of: {', '.join(STATES)}",
    )
    parser.add_argument(
        "--testdata",
        type=Path,
        default=TESTDATA,
        help="write <Kind>/testdata/*.yaml under this folder (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="argocd-capture-"))
    cluster = LocalCluster.prepare()
    try:
        cluster.up()
        stop_helpers(cluster.layout)  # a demo's operator must not act beside ours
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
        operator = OperatorProcess(cluster, scratch / "operator.log")
        operator.start()
        api = config.new_client_from_config(str(cluster.kubeconfig))  # type: ignore[no-untyped-call]
        capture = Capture(cluster, operator, api, scratch, args.testdata)
        try:
            for name in args.only or list(STATES):
                print(f"--- {name}", flush=True)
                STATES[name](capture)
                capture.clean_up()
        finally:
            operator.stop()
        print(json.dumps([str(p) for p in capture.written], indent=1))
    except Exception:
        print(f"the operator's log (kept): {scratch / 'operator.log'}", file=sys.stderr)
        raise
    else:
        shutil.rmtree(scratch)
    finally:
        cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
