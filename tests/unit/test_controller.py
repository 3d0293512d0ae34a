"""The operator's pure parts: run config and mounts from a job, child manifests, and status
derivation, with no cluster."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from trainkube.api.evaljob import EvalJob
from trainkube.api.finetunejob import FineTuneJob
from trainkube.api.llmtrainingjob import LLMTrainingJob
from trainkube.api.refs import JobOutputRef
from trainkube.api.status import Output
from trainkube.controller import children, runspec
from trainkube.controller.report import parse_report
from trainkube.controller.status import derive
from trainkube.controller.step import Observed
from trainkube.planner import plan
from trainkube.planner.from_spec import request_for
from trainkube.timestamps import later

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOW = "2026-01-01T00:00:00Z"


def _manifest(name: str) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    body["metadata"].update(namespace="ns", uid="uid-1")
    return body


def _no_output(ref: JobOutputRef) -> Output | None:
    return None


PRETRAIN = _manifest("01-tiny-pretrain-cpu.yaml")
BIG = _manifest("04-llama-7b-multinode.yaml")
JOB = LLMTrainingJob.model_validate(PRETRAIN)
PLAN = plan(request_for(JOB, lambda ref: None))


def _spec(job: LLMTrainingJob, attempt: int = 1) -> runspec.WorkerSpec:
    chosen = plan(request_for(job, lambda ref: None))
    return runspec.worker_spec(
        job,
        namespace="ns",
        plan=chosen,
        attempt=runspec.Attempt(number=attempt),
        resolve=_no_output,
    )


def test_created_checkpoint_volume_is_mounted_and_output_goes_to_its_final_folder() -> None:
    spec = _spec(JOB)
    # Mounted whole and writable once: a subPath folder the kubelet makes would be root's.
    mounts = {(c.claim, c.mount_path, c.read_only) for c in spec.claims}
    assert mounts == {("tiny-pretrain-ltj-checkpoints", "/checkpoints", False)}
    run = spec.run_config
    assert run.checkpoints is not None
    assert (run.checkpoints.directory, run.checkpoints.interval) == ("/checkpoints", 20)
    assert run.output is not None
    assert run.output.directory == "/checkpoints/final"
    assert spec.output == Output(model_path="tiny-pretrain-ltj-checkpoints:final/model")
    assert run.reporting.configmap == "tiny-pretrain-ltj-report"
    assert run.plan is not None
    assert run.plan.zero_stage == 2


def test_secrets_are_mounted_as_files_and_data_claims_read_only() -> None:
    spec = _spec(LLMTrainingJob.model_validate(BIG))
    assert spec.secrets == {"hf-token": "token", "wandb": "api-key"}
    run = spec.run_config
    assert run.model.token_file == "/var/run/secrets/trainkube/hf-token/token"
    assert run.tracking is not None
    assert run.tracking.api_key_file == "/var/run/secrets/trainkube/wandb/api-key"
    assert run.data is not None
    assert run.data.files is not None
    assert run.data.files.path == "/data/pretraining-data/fineweb-edu-llama2"
    assert run.data.files.format == "tokens"
    data_mount = next(c for c in spec.claims if c.claim == "pretraining-data")
    assert data_mount.read_only
    # No Secret value ever enters the run config.
    assert "token" not in json.loads(run.dump())["model"].get("hub", {})


def test_from_job_waits_until_the_referenced_output_exists() -> None:
    finetune = FineTuneJob.model_validate(_manifest("02-lora-finetune.yaml"))
    chosen = plan(request_for(finetune, lambda ref: JOB.spec.model))
    with pytest.raises(runspec.InputNotReady, match="waiting for LLMTrainingJob 'tiny-pretrain'"):
        runspec.worker_spec(
            finetune, namespace="ns", plan=chosen, attempt=runspec.Attempt(), resolve=_no_output
        )
    done = Output(model_path="tiny-pretrain-ltj-checkpoints:final/model")
    spec = runspec.worker_spec(
        finetune, namespace="ns", plan=chosen, attempt=runspec.Attempt(), resolve=lambda ref: done
    )
    assert spec.run_config.model.path == "/models/tiny-pretrain-ltj-checkpoints/final/model"
    assert spec.output == Output(
        model_path="tiny-lora-ftj-checkpoints:final/model",
        adapter_path="tiny-lora-ftj-checkpoints:final/adapter",
    )


def test_eval_job_run_config_carries_evaluations_baseline_and_gates() -> None:
    evaluation = EvalJob.model_validate(_manifest("03-ab-eval.yaml"))
    models = {"tiny-lora": "a:x/model", "tiny-pretrain": "b:y/model"}
    spec = runspec.worker_spec(
        evaluation,
        namespace="ns",
        plan=None,
        attempt=runspec.Attempt(),
        resolve=lambda ref: Output(model_path=models[ref.name]),
    )
    run = spec.run_config
    assert run.task == "eval"
    assert run.model.path == "/models/a/x/model"
    assert run.evaluation is not None
    assert run.evaluation.baseline is not None
    assert run.evaluation.baseline.path == "/models/b/y/model"
    assert [e.name for e in run.evaluation.evaluations] == ["held-out", "task", "qa", "speed"]
    task, qa, speed = run.evaluation.evaluations[1:]
    assert task.exact_match is not None
    assert task.exact_match.num_few_shot == 0
    assert qa.exact_match is not None
    assert qa.exact_match.num_few_shot == 2
    assert speed.latency is not None
    assert speed.latency.max_new_tokens == 16
    gates = {g.metric: g for g in run.evaluation.gates}
    assert len(gates) == 4
    assert gates["task.exactMatch"].min_improvement == 0.5


def test_worker_job_runs_the_deepspeed_launcher_without_retries() -> None:
    body = BIG
    job = LLMTrainingJob.model_validate(body)
    manifest = children.worker_job(body, job, attempt=3, spec=_spec(job, 3), image="img")
    spec = manifest["spec"]
    assert (spec["completions"], spec["parallelism"], spec["backoffLimit"]) == (4, 4, 0)
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"][:3] == [
        "deepspeed",
        "--hostfile=/etc/trainkube/hostfile",
        "--no_ssh",
    ]
    assert "--master_addr=llama-7b-ltj-a3-0.llama-7b-ltj-workers" in container["command"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert container["resources"]["limits"]["memory"] == "1600Gi"
    assert pod["priorityClassName"] == "training-high"
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert spec["template"]["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-team-a"
    assert spec["template"]["metadata"]["labels"]["trainkube.io/attempt"] == "3"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/etc/trainkube", "/dev/shm", "/checkpoints", "/data/pretraining-data"} <= mounts
    assert manifest["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


def test_cpu_jobs_use_one_process_per_node_and_request_no_gpu() -> None:
    manifest = children.run_config_map(
        PRETRAIN, attempt=1, spec=_spec(JOB), resources=JOB.spec.resources
    )
    assert manifest["data"]["hostfile"].splitlines() == [
        "tiny-pretrain-ltj-a1-0.tiny-pretrain-ltj-workers slots=1",
        "tiny-pretrain-ltj-a1-1.tiny-pretrain-ltj-workers slots=1",
    ]
    pod = children.worker_job(PRETRAIN, JOB, attempt=1, spec=_spec(JOB), image="img")
    limits = pod["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in limits


def test_a_job_of_one_worker_rendezvouses_on_loopback_without_a_service_or_spread() -> None:
    body = json.loads(json.dumps(PRETRAIN))
    body["spec"]["resources"]["nodes"] = 1
    job = LLMTrainingJob.model_validate(body)
    assert not children.needs_service(job.spec.resources)
    assert children.needs_service(JOB.spec.resources)  # two workers find each other by DNS
    config = children.run_config_map(body, attempt=1, spec=_spec(job), resources=job.spec.resources)
    assert config["data"]["hostfile"].splitlines() == ["localhost slots=1"]
    pod = children.worker_job(body, job, attempt=1, spec=_spec(job), image="img")
    pod_spec = pod["spec"]["template"]["spec"]
    assert "--master_addr=127.0.0.1" in pod_spec["containers"][0]["command"]
    assert "subdomain" not in pod_spec
    assert "affinity" not in pod_spec  # no other worker to keep apart from
    two = children.worker_job(PRETRAIN, JOB, attempt=1, spec=_spec(JOB), image="img")
    assert two["spec"]["template"]["spec"]["subdomain"] == "tiny-pretrain-ltj-workers"


@pytest.mark.parametrize(
    ("cpus", "threads"), [("500m", "1"), ("1", "1"), ("2500m", "2"), ("8", "8")]
)
def test_a_cpu_worker_requests_its_cores_and_runs_one_thread_per_whole_core(
    cpus: str, threads: str
) -> None:
    body = json.loads(json.dumps(PRETRAIN))
    body["spec"]["resources"]["cpusPerNode"] = cpus
    job = LLMTrainingJob.model_validate(body)
    pod = children.worker_job(body, job, attempt=1, spec=_spec(job), image="img")
    container = pod["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"]["cpu"] == cpus
    assert {e["name"]: e.get("value") for e in container["env"]}["OMP_NUM_THREADS"] == threads


def test_checkpoint_claim_only_when_asked_for() -> None:
    claim = children.checkpoint_claim(PRETRAIN, JOB)
    assert claim is not None
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert children.checkpoint_claim(BIG, LLMTrainingJob.model_validate(BIG)) is None


def _pod(
    index: int, phase: str, *, code: int | None = None, reason: str = "Error"
) -> dict[str, Any]:
    state = (
        {"running": {}} if code is None else {"terminated": {"exitCode": code, "reason": reason}}
    )
    return {
        "metadata": {
            "name": f"w-{index}",
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
        },
        "status": {"phase": phase, "containerStatuses": [{"state": state}]},
    }


def _batch_job(condition: str | None = None) -> dict[str, Any]:
    conditions = [{"type": condition, "status": "True"}] if condition else []
    return {
        "metadata": {"name": "tiny-ltj-a1", "uid": "job-uid-1"},
        "status": {"conditions": conditions},
    }


def _observed(**kw: Any) -> Observed:
    """Observations; an attempt Job given is also among the Jobs that exist."""
    if kw.get("attempt_job") is not None:
        kw.setdefault("existing_attempts", (1,))
    return Observed(**{"generation": 1, "nodes": 2, "suspend": False, "now": NOW, **kw})


def test_a_new_job_is_planned_and_gets_its_first_attempt() -> None:
    decision = derive(JOB.status, observed=_observed(), plan=PLAN)
    assert decision.create_attempt == 1
    status = decision.status
    assert status.plan is not None
    assert status.plan.zero_stage == 2
    assert [c.type for c in status.conditions] == ["Planned", "Running"]
    assert status.attempts[0].number == 1
    assert [e[1] for e in decision.events] == ["PlanFits"]  # the first start has no Event


def test_all_workers_running_makes_the_job_running_once() -> None:
    first = derive(JOB.status, observed=_observed(), plan=PLAN).status
    seen = _observed(attempt_job=_batch_job(), pods=[_pod(0, "Running"), _pod(1, "Running")])
    running = derive(first, observed=seen, plan=PLAN)
    assert running.status.phase == "Running"
    assert [e[1] for e in running.events] == ["WorkersRunning"]
    again = derive(running.status, observed=seen, plan=PLAN)
    assert again.events == []
    assert again.status == running.status


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (137, "OOMKilled", "OutOfMemory"),
        (11, "Error", "OutOfMemory"),
        (10, "Error", "Diverged"),
        (1, "Error", "WorkerFailed"),
    ],
)
def test_a_failed_worker_ends_the_attempt_with_the_right_reason(
    code: int, reason: str, expected: str
) -> None:
    first = derive(JOB.status, observed=_observed(), plan=PLAN).status
    pods = [_pod(0, "Running"), _pod(1, "Failed", code=code, reason=reason)]
    decision = derive(first, observed=_observed(attempt_job=_batch_job(), pods=pods), plan=PLAN)
    failed = next(c for c in decision.status.conditions if c.type == "Failed")
    assert failed.reason == expected
    assert f"worker 1 (w-1) exited with code {code}" in failed.message
    assert decision.status.attempts[-1].reason == expected


def _pending_pod(index: int, status: dict[str, Any]) -> dict[str, Any]:
    pod = _pod(index, "Pending")
    pod["spec"] = {"containers": [{"name": "trainer", "image": "example.com/trainer:9"}]}
    pod["status"] = {"phase": "Pending", **status}
    return pod


def _waiting(reason: str, message: str) -> dict[str, Any]:
    state = {"waiting": {"reason": reason, "message": message}}
    return {"containerStatuses": [{"name": "trainer", "state": state}]}


@pytest.mark.parametrize(
    ("waiting", "expected"),
    [
        ("ErrImageNeverPull", "ImageUnavailable"),
        ("ImagePullBackOff", "ImageUnavailable"),
        ("CreateContainerConfigError", "ContainerCannotStart"),
    ],
)
def test_a_worker_whose_container_cannot_start_names_the_image_and_the_kubelets_reason(
    waiting: str, expected: str
) -> None:
    first = derive(JOB.status, observed=_observed(), plan=PLAN).status
    pods = [_pod(0, "Running"), _pending_pod(1, _waiting(waiting, "the kubelet's words"))]
    decision = derive(first, observed=_observed(attempt_job=_batch_job(), pods=pods), plan=PLAN)
    running = next(c for c in decision.status.conditions if c.type == "Running")
    assert (running.status, running.reason) == ("False", expected)
    assert "1/2 workers running" in running.message
    assert "worker 1 (w-1) cannot start image 'example.com/trainer:9'" in running.message
    assert f"{waiting}: the kubelet's words" in running.message
    assert ("Warning", expected, running.message) in decision.events
    assert decision.status.phase == "Planned"  # still waiting for the workers, nothing failed


def test_an_unschedulable_worker_says_what_the_scheduler_said() -> None:
    first = derive(JOB.status, observed=_observed(), plan=PLAN).status
    unschedulable = {
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient cpu.",
            }
        ]
    }
    pods = [_pending_pod(0, unschedulable), _pending_pod(1, unschedulable)]
    decision = derive(first, observed=_observed(attempt_job=_batch_job(), pods=pods), plan=PLAN)
    running = next(c for c in decision.status.conditions if c.type == "Running")
    assert running.reason == "Unschedulable"
    assert running.message.endswith(
        "worker 0 (w-0) cannot be scheduled: 0/3 nodes are available: 3 Insufficient cpu."
    )


def test_workers_that_are_only_being_created_are_starting_not_blocked() -> None:
    first = derive(JOB.status, observed=_observed(), plan=PLAN).status
    creating = _waiting("ContainerCreating", "")
    pods = [_pending_pod(0, creating), _pending_pod(1, creating)]
    decision = derive(first, observed=_observed(attempt_job=_batch_job(), pods=pods), plan=PLAN)
    running = next(c for c in decision.status.conditions if c.type == "Running")
    assert running.reason == "WorkersStarting"


def test_a_completed_attempt_succeeds_with_the_output() -> None:
    first = derive(JOB.status, observed=_observed(), plan=PLAN).status
    output = Output(model_path="c:final/model")
    done = derive(
        first, observed=_observed(attempt_job=_batch_job("Complete"), output=output), plan=PLAN
    )
    assert done.status.phase == "Succeeded"
    assert done.status.output == output
    assert done.status.completion_time == NOW
    # A finished job's status never changes again.
    assert derive(done.status, observed=_observed(), plan=PLAN).create_attempt is None


def test_progress_and_checkpoints_come_from_the_report() -> None:
    report = parse_report(
        {
            "progress.json": json.dumps(
                {
                    "step": 20,
                    "totalSteps": 60,
                    "loss": 2.345678,
                    "events": [
                        {
                            "type": "checkpoint",
                            "step": 20,
                            "loss": 2.3,
                            "bytes": 10,
                            "path": "step-20",
                        }
                    ],
                }
            ),
            "broken": "{",
        }
    )
    first = derive(JOB.status, observed=_observed(), plan=PLAN).status
    seen = _observed(attempt_job=_batch_job(), pods=[_pod(0, "Running")], report=report)
    status = derive(first, observed=seen, plan=PLAN).status
    assert status.progress is not None
    assert (status.progress.steps, status.progress.loss) == ("20/60", "2.3457")
    assert [c.step for c in status.checkpoints] == [20]
    assert status.checkpoints[0].valid


def test_a_checkpoint_the_trainer_skipped_is_listed_as_not_valid() -> None:
    def report(*events: dict[str, Any]) -> dict[str, Any]:
        return parse_report({"progress.json": json.dumps({"step": 0, "events": list(events)})})

    saved = [{"type": "checkpoint", "step": s, "loss": 2.0, "path": f"step-{s}"} for s in (10, 20)]
    first = derive(JOB.status, observed=_observed(), plan=PLAN).status
    running = _observed(attempt_job=_batch_job(), pods=[_pod(0, "Running")], report=report(*saved))
    status = derive(first, observed=running, plan=PLAN).status
    assert [(c.step, c.valid) for c in status.checkpoints] == [(10, True), (20, True)]

    # The next attempt's trainer found step-20 corrupt and resumed from step-10.
    skipped = {"type": "checkpointSkipped", "step": 20, "reason": "step-20: does not match"}
    resumed = _observed(attempt_job=_batch_job(), pods=[_pod(0, "Running")], report=report(skipped))
    status = derive(status, observed=resumed, plan=PLAN).status
    assert [(c.step, c.valid) for c in status.checkpoints] == [(10, True), (20, False)]
    assert status.checkpoints[1].loss == "2.0000"  # what was known of it stays

    # Saved again later in that attempt: valid again.
    again = report(skipped, {"type": "checkpoint", "step": 20, "loss": 1.5, "path": "step-20"})
    resaved = _observed(attempt_job=_batch_job(), pods=[_pod(0, "Running")], report=again)
    status = derive(status, observed=resaved, plan=PLAN).status
    assert [(c.step, c.valid) for c in status.checkpoints] == [(10, True), (20, True)]


def test_time_suspended_does_not_count_against_the_deadline() -> None:
    def at(seconds: int, **kw: Any) -> Observed:
        return _observed(now=later(NOW, seconds), deadline_seconds=500, **kw)

    running = derive(JOB.status, observed=at(0), plan=PLAN).status  # first start at 0
    job = _batch_job()
    suspended = derive(running, observed=at(100, attempt_job=job, suspend=True), plan=PLAN)
    assert suspended.status.phase == "Suspended"
    # Still suspended long past the deadline: nothing fails while suspended.
    still = derive(suspended.status, observed=at(5000, suspend=True), plan=PLAN).status
    resumed = derive(still, observed=at(6000), plan=PLAN)
    assert resumed.status.suspended_seconds == 5900
    assert resumed.create_attempt == 2
    # Active so far: 100 s before the suspension and 300 s after it.
    active = derive(resumed.status, observed=at(6300, attempt_job=job), plan=PLAN).status
    assert active.phase != "Failed"
    late = derive(active, observed=at(6401, attempt_job=job), plan=PLAN)
    assert late.status.phase == "Failed"
    assert late.delete_attempts == [1]
    failed = next(c for c in late.status.conditions if c.type == "Failed")
    assert failed.reason == "DeadlineExceeded"


def test_suspending_deletes_the_attempt_and_says_so() -> None:
    first = derive(JOB.status, observed=_observed(), plan=PLAN).status
    decision = derive(first, observed=_observed(attempt_job=_batch_job(), suspend=True), plan=PLAN)
    assert decision.delete_attempts == [1]
    assert decision.status.phase == "Suspended"
    assert decision.status.attempts[-1].reason == "Suspended"


def test_a_plan_that_does_not_fit_fails_without_children() -> None:
    decision = derive(JOB.status, observed=_observed(), plan=None, plan_error="too big: 1 > 0")
    assert decision.create_attempt is None
    failed = next(c for c in decision.status.conditions if c.type == "Failed")
    assert (failed.reason, failed.message) == ("DoesNotFit", "too big: 1 > 0")


def test_workers_that_finished_before_the_job_completes_keep_the_job_running() -> None:
    first = derive(JOB.status, observed=_observed(), plan=PLAN).status
    both = _observed(attempt_job=_batch_job(), pods=[_pod(0, "Running"), _pod(1, "Running")])
    running = derive(first, observed=both, plan=PLAN).status
    done = _observed(
        attempt_job=_batch_job(), pods=[_pod(0, "Succeeded", code=0), _pod(1, "Running")]
    )
    decision = derive(running, observed=done, plan=PLAN)
    assert decision.status.phase == "Running"
    assert decision.events == []


def test_the_fault_annotation_is_obeyed_only_with_test_hooks_on() -> None:
    from trainkube.controller import reconcile  # noqa: PLC0415 - the one private helper here
    from trainkube.controller.hooks import CrashPoints  # noqa: PLC0415

    body = {"metadata": {"annotations": {"trainkube.io/fault": '{"spikeAtStep": 45}'}}}
    off, on = CrashPoints({}), CrashPoints({"TRAINKUBE_ENABLE_TEST_HOOKS": "1"})
    assert reconcile._fault(body, 1, enabled=off.enabled) is None
    fault = reconcile._fault(body, 1, enabled=on.enabled)
    assert fault is not None
    assert fault.spike_at_step == 45
    assert reconcile._fault(body, 2, enabled=on.enabled) is None  # first attempt only


def test_a_tokenizer_on_a_volume_is_mounted_read_only_and_named_in_the_run_config() -> None:
    body = yaml.safe_load(yaml.safe_dump(BIG))
    del body["spec"]["model"]["tokenizer"]
    body["spec"]["model"]["tokenizerVolume"] = {"claimName": "tokenizers", "path": "llama-2/"}
    spec = _spec(LLMTrainingJob.model_validate(body))
    assert ("tokenizers", "/models/tokenizers", True) in {
        (c.claim, c.mount_path, c.read_only) for c in spec.claims
    }
    assert spec.run_config.model.tokenizer_path == "/models/tokenizers/llama-2"
    assert spec.run_config.model.tokenizer_hub is None


def test_the_hang_timeout_reaches_the_trainers_report_settings() -> None:
    # Rank 0's heartbeat sends the report proving a hang by this limit (trainkube.hangrule).
    timed = copy.deepcopy(PRETRAIN)
    timed["spec"]["failurePolicy"] = {"hangTimeoutSeconds": 45}
    assert (
        _spec(LLMTrainingJob.model_validate(timed)).run_config.reporting.hang_timeout_seconds == 45
    )
    assert _spec(JOB).run_config.reporting.hang_timeout_seconds is None
