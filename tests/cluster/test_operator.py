"""The operator against the real control plane, with KWOK playing the GPU nodes' kubelets:
children of the right shape, status that follows the workers, failures that say why, suspend
and resume, cascading deletion, restarts without duplicates, and many jobs at once."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.cluster.conftest import OperatorProcess, described
from tests.cluster.conftest import apply_manifests as _apply
from tests.conftest import wait_for
from tests.localcluster import nodes
from tests.localcluster.cluster import LocalCluster
from trainkube.runconfig import RunConfig
from trainkube_trainer.reporting import ConfigMapSink, Reporter

GROUP, VERSION = "trainkube.io", "v1alpha1"
REPO = Path(__file__).resolve().parents[2]


def _training_job(name: str, *, nodes_: int = 2, gpus: int = 8, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "LLMTrainingJob",
        "metadata": {"name": name, "labels": {"team": "research"}},
        "spec": {
            "model": {
                "architecture": {
                    "layers": 12,
                    "hiddenSize": 768,
                    "heads": 12,
                    "vocabSize": 32000,
                    "contextLength": 2048,
                }
            },
            "data": {"builtin": "tiny-stories", "sequenceLength": 2048},
            "training": {"maxSteps": 1000, "globalBatchSize": 64, "learningRate": 3e-4},
            "resources": {"nodes": nodes_, "gpusPerNode": gpus, "gpuMemory": "80Gi"},
            "template": {"labels": {"kueue.x-k8s.io/queue-name": "team-a"}},
            **spec,
        },
    }


def _job(api: Any, namespace: str, name: str, plural: str = "llmtrainingjobs") -> dict[str, Any]:
    found = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, name
    )
    return cast(dict[str, Any], found)


def _condition(job: dict[str, Any], kind: str) -> dict[str, Any] | None:
    conditions = (job.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), None)


def _wait_condition(
    api: Any, namespace: str, name: str, kind: str, status: str = "True", **kw: Any
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        found = _condition(_job(api, namespace, name, kw.get("plural", "llmtrainingjobs")), kind)
        return found if found and found["status"] == status else None

    result: dict[str, Any] = wait_for(check, timeout_s=kw.get("timeout_s", 60))
    return result


def _pods(api: Any, namespace: str, name: str) -> list[Any]:
    selector = f"trainkube.io/job={name},app.kubernetes.io/component=worker"
    return list(client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items)


def _finish(api: Any, namespace: str, pod: Any, code: int, reason: str | None = None) -> None:
    annotations = nodes.finish_annotations(exit_code=code, reason=reason)
    client.CoreV1Api(api).patch_namespaced_pod(
        pod.metadata.name, namespace, {"metadata": {"annotations": annotations}}
    )


@pytest.mark.usefixtures("operator")
def test_a_training_job_gets_children_of_the_right_shape(
    api_client: Any, crds: LocalCluster, namespace: str
) -> None:
    _apply(crds, namespace, _training_job("shape"))
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    job = wait_for(lambda: batch.read_namespaced_job("shape-ltj-a1", namespace), timeout_s=30)
    owner = job.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("LLMTrainingJob", "shape", True)
    assert job.metadata.labels["trainkube.io/job"] == "shape"
    assert job.metadata.labels["app.kubernetes.io/managed-by"] == "trainkube-operator"
    spec = job.spec
    assert (spec.completion_mode, spec.completions, spec.parallelism, spec.backoff_limit) == (
        "Indexed",
        2,
        2,
        0,
    )
    pod = spec.template.spec
    assert pod.restart_policy == "Never"
    assert pod.subdomain == "shape-ltj-workers"
    assert pod.service_account_name == "shape-ltj-worker"
    assert spec.template.metadata.labels["kueue.x-k8s.io/queue-name"] == "team-a"
    container = pod.containers[0]
    assert container.command[:3] == ["deepspeed", "--hostfile=/etc/trainkube/hostfile", "--no_ssh"]
    assert "--node_rank=$(JOB_COMPLETION_INDEX)" in container.command
    assert "--master_addr=shape-ltj-a1-0.shape-ltj-workers" in container.command
    assert container.resources.limits[nodes.GPU_RESOURCE] == "8"
    shm = next(v for v in pod.volumes if v.name == "shm")
    assert shm.empty_dir.medium == "Memory"

    service = core.read_namespaced_service("shape-ltj-workers", namespace)
    assert service.spec.cluster_ip == "None"
    config = core.read_namespaced_config_map("shape-ltj-run-a1", namespace).data
    run = RunConfig.model_validate(json.loads(config["run.json"]))
    assert run.attempt == 1
    assert run.plan is not None
    assert run.plan.deepspeed["train_batch_size"] == 64
    assert config["hostfile"] == (
        "shape-ltj-a1-0.shape-ltj-workers slots=8\nshape-ltj-a1-1.shape-ltj-workers slots=8\n"
    )
    role = client.RbacAuthorizationV1Api(api_client).read_namespaced_role(
        "shape-ltj-worker", namespace
    )
    assert role.rules[0].resource_names == ["shape-ltj-report"]
    assert role.rules[0].verbs == ["get", "patch", "update"]


@pytest.mark.usefixtures("operator")
def test_status_follows_the_workers_from_running_to_succeeded(
    api_client: Any, crds: LocalCluster, namespace: str
) -> None:
    _apply(crds, namespace, _training_job("ok"))
    running = _wait_condition(api_client, namespace, "ok", "Running")
    assert running["reason"] == "WorkersRunning"
    assert running["message"] == "2/2 workers running (attempt 1)"
    status = _job(api_client, namespace, "ok")["status"]
    assert status["phase"] == "Running"
    assert status["plan"]["dataParallelSize"] == 16
    assert status["plan"]["reason"].startswith("ZeRO-")
    assert status["attempts"][0]["number"] == 1
    row = crds.kubectl("get", "llmtrainingjob", "ok", "-n", namespace, "--no-headers").split()
    assert row[1] == "Running"

    for pod in _pods(api_client, namespace, "ok"):
        _finish(api_client, namespace, pod, 0)
    done = _wait_condition(api_client, namespace, "ok", "Succeeded")
    assert done["reason"] == "Completed"
    status = _job(api_client, namespace, "ok")["status"]
    assert status["phase"] == "Succeeded"
    assert status["completionTime"]
    assert status["attempts"][0]["reason"] == "Completed"
    shown = described(crds, "llmtrainingjob", "ok", namespace, "PlanFits", "WorkersRunning")
    assert "Completed" in shown


@pytest.mark.usefixtures("operator")
def test_a_failed_worker_with_no_restarts_left_fails_the_job_and_says_why(
    api_client: Any, crds: LocalCluster, namespace: str
) -> None:
    _apply(crds, namespace, _training_job("oom", failurePolicy={"maxRestarts": 0}))
    _wait_condition(api_client, namespace, "oom", "Running")
    pods = sorted(_pods(api_client, namespace, "oom"), key=lambda p: p.metadata.name)
    _finish(api_client, namespace, pods[1], 137, "OOMKilled")
    failed = _wait_condition(api_client, namespace, "oom", "Failed")
    assert failed["reason"] == "RestartsExhausted"
    assert "worker 1" in failed["message"]
    assert "exited with code 137 (OOMKilled)" in failed["message"]
    assert _job(api_client, namespace, "oom")["status"]["attempts"][0]["reason"] == "OutOfMemory"
    assert _job(api_client, namespace, "oom")["status"]["phase"] == "Failed"


@pytest.mark.usefixtures("operator")
def test_suspend_stops_the_workers_and_resume_starts_a_new_attempt(
    api_client: Any, crds: LocalCluster, namespace: str
) -> None:
    batch = client.BatchV1Api(api_client)
    _apply(crds, namespace, _training_job("pause"))
    _wait_condition(api_client, namespace, "pause", "Running")
    _apply(crds, namespace, _training_job("pause", suspend=True))
    _wait_condition(api_client, namespace, "pause", "Suspended")
    wait_for(lambda: not batch.list_namespaced_job(namespace).items, timeout_s=30)
    assert _job(api_client, namespace, "pause")["status"]["phase"] == "Suspended"

    _apply(crds, namespace, _training_job("pause", suspend=False))
    resumed = _wait_condition(api_client, namespace, "pause", "Suspended", status="False")
    assert resumed["reason"] == "Resumed"
    wait_for(lambda: batch.read_namespaced_job("pause-ltj-a2", namespace), timeout_s=30)
    _wait_condition(api_client, namespace, "pause", "Running")


@pytest.mark.usefixtures("operator")
def test_deleting_the_job_removes_everything_it_made(
    api_client: Any, crds: LocalCluster, namespace: str
) -> None:
    _apply(crds, namespace, _training_job("gone"))
    _wait_condition(api_client, namespace, "gone", "Running")
    crds.kubectl("delete", "llmtrainingjob", "gone", "-n", namespace)
    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    selector = "trainkube.io/job=gone"
    wait_for(lambda: not batch.list_namespaced_job(namespace, label_selector=selector).items)
    wait_for(lambda: not core.list_namespaced_config_map(namespace, label_selector=selector).items)
    wait_for(lambda: not core.list_namespaced_service(namespace, label_selector=selector).items)
    wait_for(lambda: not core.list_namespaced_pod(namespace, label_selector=selector).items)


@pytest.mark.usefixtures("operator")
def test_a_job_that_cannot_fit_fails_with_the_numbers(
    api_client: Any, crds: LocalCluster, namespace: str
) -> None:
    manifest = _training_job("huge", nodes_=1, gpus=1)
    manifest["spec"]["model"]["architecture"] = {
        "layers": 80,
        "hiddenSize": 8192,
        "heads": 64,
        "kvHeads": 8,
        "intermediateSize": 28672,
        "vocabSize": 32000,
        "contextLength": 4096,
    }
    _apply(crds, namespace, manifest)
    failed = _wait_condition(api_client, namespace, "huge", "Failed")
    assert failed["reason"] == "DoesNotFit"
    assert "the model does not fit: 68.98B parameters on 1 GPUs" in failed["message"]
    assert "What would make it fit:" in failed["message"]
    assert not client.BatchV1Api(api_client).list_namespaced_job(namespace).items


def manual_volume(namespace: str, claim: str) -> dict[str, Any]:
    """A hostPath volume of class manual made for one claim: it binds on any node, KWOK's too
    (the local class's volumes are bound to the real CPU node)."""
    volume = f"{namespace}-{claim}"
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": volume},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "manual",
            "hostPath": {"path": f"/tmp/trainkube-pv/{volume}"},
            "claimRef": {"namespace": namespace, "name": claim},
        },
    }


def _bound_claim(cluster: LocalCluster, namespace: str, name: str) -> None:
    """A claim bound to a hostPath volume of class manual."""
    manifests = [
        manual_volume(namespace, name),
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "manual",
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    ]
    _apply(cluster, namespace, *manifests)
    cluster.kubectl("wait", "--for=jsonpath={.status.phase}=Bound", f"pvc/{name}", "-n", namespace)


def fine_tune_of(base: str) -> dict[str, Any]:
    """A LoRA FineTuneJob `adapt` (one KWOK GPU) of the LLMTrainingJob `base`'s output."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FineTuneJob",
        "metadata": {"name": "adapt"},
        "spec": {
            "baseModel": {"fromJob": {"kind": "LLMTrainingJob", "name": base}},
            "data": {
                "builtin": "tiny-instructions",
                "promptField": "prompt",
                "responseField": "response",
            },
            "training": {"maxSteps": 10, "globalBatchSize": 8, "learningRate": 1e-3},
            "resources": {"nodes": 1, "gpusPerNode": 1},
        },
    }


@pytest.mark.usefixtures("operator")
def test_a_fine_tune_waits_for_the_job_it_builds_on(
    api_client: Any, crds: LocalCluster, namespace: str
) -> None:
    manifest = fine_tune_of("base")
    _apply(crds, namespace, manifest)
    waiting = _wait_condition(
        api_client, namespace, "adapt", "Planned", status="False", plural="finetunejobs"
    )
    assert waiting["reason"] == "WaitingForInput"
    assert "LLMTrainingJob 'base' was not found" in waiting["message"]

    _bound_claim(crds, namespace, "shared")
    base = _training_job("base", nodes_=1, gpus=1, output={"claimName": "shared", "path": "base"})
    _apply(crds, namespace, base)

    def waits_for_success() -> bool:
        found = _condition(_job(api_client, namespace, "adapt", "finetunejobs"), "Planned")
        return bool(found and "waiting for LLMTrainingJob 'base' to succeed" in found["message"])

    wait_for(waits_for_success, timeout_s=60)
    _wait_condition(api_client, namespace, "base", "Running")
    for pod in _pods(api_client, namespace, "base"):
        _finish(api_client, namespace, pod, 0)
    _wait_condition(api_client, namespace, "base", "Succeeded")
    assert _job(api_client, namespace, "base")["status"]["output"] == {
        "modelPath": "shared:base/model"
    }

    planned = _wait_condition(api_client, namespace, "adapt", "Planned", plural="finetunejobs")
    assert planned["reason"] == "PlanFits"
    config = wait_for(
        lambda: client.CoreV1Api(api_client).read_namespaced_config_map(
            "adapt-ftj-run-a1", namespace
        ),
        timeout_s=30,
    )
    run = RunConfig.model_validate(json.loads(config.data["run.json"]))
    assert run.model.path == "/models/shared/base/model"
    assert run.method == "lora"
    _wait_condition(api_client, namespace, "adapt", "Running", plural="finetunejobs")
    for pod in _pods(api_client, namespace, "adapt"):
        _finish(api_client, namespace, pod, 0)
    _wait_condition(api_client, namespace, "adapt", "Succeeded", plural="finetunejobs")


def test_a_restarted_operator_creates_no_duplicates(
    api_client: Any, crds: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    _apply(crds, namespace, _training_job("steady"))
    _wait_condition(api_client, namespace, "steady", "Running")
    operator.kill()
    operator.start()
    time.sleep(8)  # a few reconcile rounds of the new process
    batch = client.BatchV1Api(api_client)
    jobs = batch.list_namespaced_job(namespace, label_selector="trainkube.io/job=steady").items
    assert [j.metadata.name for j in jobs] == ["steady-ltj-a1"]
    assert len(_pods(api_client, namespace, "steady")) == 2
    status = _job(api_client, namespace, "steady")["status"]
    assert [a["number"] for a in status["attempts"]] == [1]
    assert status["phase"] == "Running"


@pytest.mark.usefixtures("operator")
def test_twenty_jobs_at_once_all_reach_running(
    api_client: Any, crds: LocalCluster, namespace: str
) -> None:
    started = time.monotonic()
    manifests = [_training_job(f"many-{i}", nodes_=1, gpus=1) for i in range(20)]
    _apply(crds, namespace, *manifests)

    def all_running() -> bool:
        jobs = client.CustomObjectsApi(api_client).list_namespaced_custom_object(
            GROUP, VERSION, namespace, "llmtrainingjobs"
        )["items"]
        return len(jobs) == 20 and all(
            (j.get("status") or {}).get("phase") == "Running" for j in jobs
        )

    wait_for(all_running, timeout_s=180, interval_s=1)
    print(f"20 jobs Running {time.monotonic() - started:.1f} s after apply")


def _worker_client(api: Any, cluster: LocalCluster, namespace: str, job: str) -> Any:
    """An API client authenticated as the job's worker service account (a real token)."""
    token = (
        client.CoreV1Api(api)
        .create_namespaced_service_account_token(
            f"{job}-ltj-worker",
            namespace,
            client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])),
        )
        .status.token
    )
    configuration = client.Configuration()
    configuration.host = cluster.layout.server_url
    configuration.ssl_ca_cert = str(cluster.layout.pki_dir / "ca.crt")
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(configuration)


@pytest.mark.usefixtures("operator")
def test_the_trainers_reports_reach_status_through_the_jobs_own_configmap(
    api_client: Any, crds: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    _apply(crds, namespace, _training_job("talk"))
    _apply(crds, namespace, _training_job("other"))
    _wait_condition(api_client, namespace, "talk", "Running")
    _wait_condition(api_client, namespace, "other", "Running")
    as_worker = _worker_client(api_client, crds, namespace, "talk")
    reporter = Reporter(
        tmp_path,
        enabled=True,
        min_interval=0,
        sink=ConfigMapSink("talk-ltj-report", namespace, api_client=as_worker),
    )
    reporter.state["attempt"] = 1  # as the trainer's main does: reports name their attempt
    reporter.progress(step=20, totalSteps=1000, loss=2.5, tokensPerSecond=1234.5)
    reporter.event("checkpoint", step=20, loss=2.5, path="step-20", bytes=1024, seconds=0.1)

    def reported() -> dict[str, Any] | None:
        status = _job(api_client, namespace, "talk")["status"]
        return status if status.get("checkpoints") else None

    status = wait_for(reported, timeout_s=30)
    assert status["progress"]["steps"] == "20/1000"
    assert status["progress"]["loss"] == "2.5000"
    assert status["progress"]["tokensPerSecond"] == 1234.5
    assert status["checkpoints"][0]["step"] == 20
    row = crds.kubectl("get", "llmtrainingjob", "talk", "-n", namespace, "--no-headers").split()
    assert row[1:4] == ["Running", "20/1000", "2.5000"]

    # The workers may write their own job's report and nothing else.
    worker_core = client.CoreV1Api(as_worker)
    for forbidden in (
        lambda: worker_core.patch_namespaced_config_map(
            "other-ltj-report", namespace, {"data": {}}
        ),
        lambda: worker_core.list_namespaced_config_map(namespace),
        lambda: worker_core.read_namespaced_config_map("talk-ltj-run-a1", namespace),
    ):
        with pytest.raises(ApiException) as denied:
            forbidden()
        assert denied.value.status == 403


@pytest.mark.usefixtures("operator")
def test_a_missing_secret_is_named_and_the_job_starts_once_it_exists(
    api_client: Any, crds: LocalCluster, namespace: str, trainer_image: str
) -> None:
    """On the real node: the operator reads no Secret; the kubelet's FailedMount warning names
    the missing one, and the worker starts once it is created."""
    manifest = yaml.safe_load((REPO / "examples" / "01-tiny-pretrain-cpu.yaml").read_text())
    manifest["metadata"]["name"] = "tracked"
    manifest["spec"]["resources"].update(nodes=1, cpusPerNode="500m")
    manifest["spec"]["training"]["maxSteps"] = 10
    manifest["spec"]["tracking"] = {
        "project": "secrets-test",
        "mode": "offline",
        "apiKeySecretRef": {"name": "wandb", "key": "api-key"},
    }
    _apply(crds, namespace, manifest)
    wait_for(
        lambda: (
            (_condition(_job(api_client, namespace, "tracked"), "Running") or {}).get("reason")
            == "SecretNotFound"
        ),
        timeout_s=60,
    )
    blocked = _condition(_job(api_client, namespace, "tracked"), "Running") or {}
    assert blocked["status"] == "False"
    assert 'secret "wandb" not found' in blocked["message"]
    assert "worker 0 (tracked-ltj-a1-0-" in blocked["message"]

    client.CoreV1Api(api_client).create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="wandb"), string_data={"api-key": "k" * 40}
        ),
    )
    succeeded = _wait_condition(api_client, namespace, "tracked", "Succeeded", timeout_s=240)
    assert succeeded["reason"] == "Completed"


@pytest.mark.usefixtures("operator")
def test_the_active_deadline_fails_the_job_and_stops_the_workers(
    api_client: Any, crds: LocalCluster, namespace: str
) -> None:
    _apply(crds, namespace, _training_job("late", nodes_=1, gpus=1, activeDeadlineSeconds=3))
    failed = _wait_condition(api_client, namespace, "late", "Failed", timeout_s=60)
    assert failed["reason"] == "DeadlineExceeded"
    assert "activeDeadlineSeconds (3 s) exceeded" in failed["message"]
    wait_for(lambda: not client.BatchV1Api(api_client).list_namespaced_job(namespace).items)


@pytest.mark.usefixtures("operator")
def test_a_finished_job_is_deleted_after_its_ttl(
    api_client: Any, crds: LocalCluster, namespace: str
) -> None:
    _apply(crds, namespace, _training_job("brief", nodes_=1, gpus=1, ttlSecondsAfterFinished=2))
    _wait_condition(api_client, namespace, "brief", "Running")
    for pod in _pods(api_client, namespace, "brief"):
        _finish(api_client, namespace, pod, 0)
    _wait_condition(api_client, namespace, "brief", "Succeeded")
    jobs = client.CustomObjectsApi(api_client)
    wait_for(
        lambda: (
            not jobs.list_namespaced_custom_object(GROUP, VERSION, namespace, "llmtrainingjobs")[
                "items"
            ]
        ),
        timeout_s=30,
    )


def test_the_operator_serves_prometheus_metrics(
    api_client: Any, crds: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    _apply(crds, namespace, _training_job("measured", nodes_=1, gpus=1))
    _wait_condition(api_client, namespace, "measured", "Running")

    def scraped() -> str | None:
        url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
        line = 'trainkube_jobs{kind="LLMTrainingJob",phase="Running"}'
        return text if line in text and f"{line} 0.0" not in text else None

    text = wait_for(scraped, timeout_s=20)
    assert 'trainkube_reconcile_seconds_count{kind="LLMTrainingJob"}' in text


def _leader_value(process: OperatorProcess) -> float:
    url = f"http://127.0.0.1:{process.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith("trainkube_leader "):
                return float(line.split()[1])
    return -1.0


def test_two_replicas_never_act_at_once_and_the_standby_takes_over(
    api_client: Any,
    crds: LocalCluster,
    namespace: str,
    operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    standby = OperatorProcess(crds, tmp_path / "standby.log")
    standby.start()
    try:
        wait_for(lambda: _leader_value(operator) == 1.0, timeout_s=30)
        time.sleep(4)  # a few election rounds of the second replica
        assert _leader_value(standby) == 0.0
        assert _leader_value(operator) == 1.0

        operator.kill()
        wait_for(lambda: _leader_value(standby) == 1.0, timeout_s=40, interval_s=1)
        _apply(crds, namespace, _training_job("handover", nodes_=1, gpus=1))
        _wait_condition(api_client, namespace, "handover", "Running")
    finally:
        standby.stop()
        operator.start()  # the session's operator again, for the tests after this one


@pytest.mark.usefixtures("operator")
def test_an_eval_job_runs_its_workers_and_succeeds(
    api_client: Any, crds: LocalCluster, namespace: str
) -> None:
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "EvalJob",
        "metadata": {"name": "judge"},
        "spec": {
            "model": {"hub": {"id": "meta-llama/Llama-3.2-1B"}},
            "baseline": {"hub": {"id": "meta-llama/Llama-3.2-1B-Instruct"}},
            "evaluations": [{"name": "held-out", "perplexity": {"builtin": "tiny-stories"}}],
            "gates": [{"metric": "held-out.perplexity", "maxRegression": 1.0}],
            "resources": {"nodes": 1, "gpusPerNode": 1},
        },
    }
    _apply(crds, namespace, manifest)
    _wait_condition(api_client, namespace, "judge", "Running", plural="evaljobs")
    config = client.CoreV1Api(api_client).read_namespaced_config_map("judge-evj-run-a1", namespace)
    run = RunConfig.model_validate(json.loads(config.data["run.json"]))
    assert run.task == "eval"
    assert run.evaluation is not None
    assert run.evaluation.baseline is not None
    for pod in _pods(api_client, namespace, "judge"):
        _finish(api_client, namespace, pod, 0)
    _wait_condition(api_client, namespace, "judge", "Succeeded", plural="evaljobs")
    row = crds.kubectl("get", "evaljob", "judge", "-n", namespace, "--no-headers").split()
    assert row[1] == "Succeeded"
