"""The controller core (issue 11) against the real control plane, KWOK playing the GPU nodes: a
suspend that lands while a reconcile is under way is never undone, and jobs of the three kinds
with one name in one namespace are independent."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client

from tests.cluster import chaos
from tests.cluster.conftest import apply_manifests
from tests.conftest import wait_for
from tests.localcluster.cluster import LocalCluster

GROUP, VERSION = chaos.GROUP, chaos.VERSION
WORKER = f"{chaos.COMPONENT_LABEL}=worker"


def _get(api: Any, namespace: str, kind: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, chaos.PLURALS[kind], name
    )
    return found


def _pods(api: Any, namespace: str, selector: str) -> list[dict[str, Any]]:
    pods, _ = chaos.raw_items(
        client.CoreV1Api(api).list_namespaced_pod(
            namespace, label_selector=selector, _preload_content=False
        )
    )
    return pods


def _running_attempt(api: Any, namespace: str, name: str, after: int) -> int | None:
    """The attempt newer than `after` once its only pod runs and status says Running."""
    pods = [p for p in _pods(api, namespace, f"{chaos.JOB_LABEL}={name}") if chaos.pod_alive(p)]
    attempts = {chaos.attempt_of(p) for p in pods}
    running = all((p.get("status") or {}).get("phase") == "Running" for p in pods)
    job = _get(api, namespace, "LLMTrainingJob", name)
    if len(attempts) == 1 and running and chaos.is_true(job, "Running"):
        [attempt] = attempts
        return attempt if attempt > after else None
    return None


def _wait_running(
    api: Any, namespace: str, names: list[str], attempt: dict[str, int], recorders: chaos.Recorders
) -> None:
    """Each job's next attempt runs; a job that does not get there fails with its story."""
    for name in names:
        try:
            attempt[name] = wait_for(
                lambda name=name: _running_attempt(api, namespace, name, attempt[name]),
                timeout_s=60,
            )
        except pytest.fail.Exception as error:
            story = recorders.story(f"LLMTrainingJob/{name}")
            raise AssertionError(
                f"{name}: no attempt after {attempt[name]} runs\n{story}"
            ) from error


# ------------------------------------------------------------------------------------------------
# The race: suspend right after an injected failure or rollback request

RACE_JOBS = 6
RACE_ROUNDS = 4
# How long after the failure (or the rollback request) the suspend lands: from before the
# operator can have seen the failure to well inside the reconcile it starts.
RACE_DELAYS_S = (0.0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.8)
HOLD_S = 4.0  # watched while suspended: nothing may start, nothing may flip back
GC_WAIT_S = 300.0  # for a garbage collector that keeps up (suspended workers wait for it)


@pytest.mark.timeout(int(GC_WAIT_S) + 300)
@pytest.mark.usefixtures("operator")
def test_a_suspend_landing_during_a_reconcile_is_never_undone(
    api_client: Any, crds: LocalCluster, namespace: str
) -> None:
    core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    names = [f"race-{i}" for i in range(RACE_JOBS)]
    manifests = [
        chaos.training_job(name, max_restarts=100, max_rollbacks=100, tight=False) for name in names
    ]
    chaos.wait_for_garbage_collector(api_client, namespace, GC_WAIT_S)
    recorders = chaos.Recorders.start(api_client, namespace, ["LLMTrainingJob"], time.monotonic())
    try:
        apply_manifests(crds, namespace, *manifests)
        attempt = dict.fromkeys(names, 0)
        failures = dict.fromkeys(names, 0)
        raced = {True: 0, False: 0}
        for round_ in range(RACE_ROUNDS):
            _wait_running(api_client, namespace, names, attempt, recorders)
            for index, name in enumerate(names):
                [pod] = [
                    p
                    for p in _pods(api_client, namespace, f"{chaos.JOB_LABEL}={name}")
                    if chaos.pod_alive(p)
                ]
                if (index + round_) % 3 == 2:  # a rollback request instead of a failure
                    chaos.patch_job(
                        custom,
                        namespace,
                        name,
                        {"metadata": {"annotations": {chaos.ROLLBACK_ANNOTATION: str(round_)}}},
                    )
                else:
                    chaos.finish_pod(core, namespace, pod["metadata"]["name"], 1)
                    failures[name] += 1
                time.sleep(RACE_DELAYS_S[(index * RACE_ROUNDS + round_) % len(RACE_DELAYS_S)])
                chaos.patch_job(custom, namespace, name, {"spec": {"suspend": True}})
            _check_suspended(api_client, namespace, names, recorders, round_)
            for name in names:  # did the operator start the next attempt before it saw suspend?
                made = recorders.jobs.created_after_version(f"LLMTrainingJob/{name}", 0)
                raced[any(a > attempt[name] for a in made)] += 1
            for name in names:
                chaos.patch_job(custom, namespace, name, {"spec": {"suspend": False}})
        _wait_running(api_client, namespace, names, attempt, recorders)
    finally:
        recorders.stop()

    print(
        f"\n{RACE_JOBS * RACE_ROUNDS} suspends right after a failure or rollback request: "
        f"{raced[True]} after the operator had started the next attempt, {raced[False]} before"
    )
    verdict = chaos.Verdict()
    for name in names:
        key = f"LLMTrainingJob/{name}"
        chaos.check_recorded(verdict, key, recorders, {})
        status = _get(api_client, namespace, "LLMTrainingJob", name).get("status") or {}
        numbers = [int(a["number"]) for a in status.get("attempts") or []]
        wrong = chaos.attempt_numbering(numbers)
        if wrong:
            verdict.add(chaos.ATTEMPTS, key, wrong)
        restarts, _ = chaos.counts(status)
        if restarts > failures[name]:
            verdict.add(chaos.RESTARTS, key, f"{restarts} restarts for {failures[name]} failures")
    assert not verdict.failing_jobs(), (
        "\n".join(f"{name}: {jobs}" for name, jobs in verdict.problems.items() if jobs)
        + "\n"
        + "\n".join(recorders.story(key) for key in verdict.failing_jobs())
    )


def _check_suspended(
    api: Any, namespace: str, names: list[str], recorders: chaos.Recorders, round_: int
) -> None:
    """Each job reaches Suspended with no live pods, and for HOLD_S after that no batch Job is
    created, no pod runs, and the Suspended condition stays."""

    def settled(name: str) -> bool:
        job = _get(api, namespace, "LLMTrainingJob", name)
        live = [p for p in _pods(api, namespace, f"{chaos.JOB_LABEL}={name}") if chaos.pod_alive(p)]
        return chaos.is_true(job, "Suspended") and not live

    for name in names:
        try:
            wait_for(lambda name=name: settled(name), timeout_s=60)
        except pytest.fail.Exception as error:
            story = recorders.story(f"LLMTrainingJob/{name}")
            raise AssertionError(f"round {round_}: {name} never Suspended\n{story}") from error
    time.sleep(HOLD_S)
    problems = []
    for name in names:
        key = f"LLMTrainingJob/{name}"
        job = _get(api, namespace, "LLMTrainingJob", name)
        live = [p for p in _pods(api, namespace, f"{chaos.JOB_LABEL}={name}") if chaos.pod_alive(p)]
        with recorders.statuses.lock:
            since = recorders.statuses.suspended_since[key][-1]
        late = recorders.jobs.created_after_version(key, since)
        found = [
            "spec.suspend was reset" if not job["spec"].get("suspend") else "",
            "" if chaos.is_true(job, "Suspended") else f"{chaos.condition(job, 'Suspended')}",
            f"pods alive: {[p['metadata']['name'] for p in live]}" if live else "",
            f"attempts {late} created after it was seen Suspended" if late else "",
        ]
        if any(found):
            problems.append(f"{name}: {'; '.join(f for f in found if f)}\n{recorders.story(key)}")
    assert not problems, f"round {round_}:\n" + "\n".join(problems)


# ------------------------------------------------------------------------------------------------
# Same name, three kinds

SHAPE = {"layers": 4, "hiddenSize": 256, "heads": 4, "vocabSize": 32000, "contextLength": 512}


def _same_named(name: str) -> list[dict[str, Any]]:
    resources = {"nodes": 1, "gpusPerNode": 1, "gpuMemory": "80Gi"}
    return [
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "LLMTrainingJob",
            "metadata": {"name": name},
            "spec": {
                "model": {"architecture": SHAPE},
                "data": {"builtin": "tiny-stories", "sequenceLength": 512},
                "training": {"maxSteps": 100, "globalBatchSize": 8, "learningRate": 3e-4},
                "resources": resources,
            },
        },
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "FineTuneJob",
            "metadata": {"name": name},
            "spec": {
                "baseModel": {"hub": {"id": "meta-llama/Llama-3.2-1B"}, "shape": SHAPE},
                "data": {
                    "builtin": "tiny-instructions",
                    "promptField": "prompt",
                    "responseField": "response",
                    "sequenceLength": 512,
                },
                "training": {"maxSteps": 10, "globalBatchSize": 8, "learningRate": 1e-3},
                "resources": resources,
            },
        },
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "EvalJob",
            "metadata": {"name": name},
            "spec": {
                "model": {"hub": {"id": "meta-llama/Llama-3.2-1B"}},
                "evaluations": [{"name": "held-out", "perplexity": {"builtin": "tiny-stories"}}],
                "resources": resources,
            },
        },
    ]


def _children(api: Any, namespace: str, name: str, kind: str) -> dict[str, list[Any]]:
    """A job's batch Jobs, Services and ConfigMaps, selected by job and kind labels."""
    selector = f"{chaos.JOB_LABEL}={name},{chaos.KIND_LABEL}={kind}"
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    return {
        "batch Jobs": batch.list_namespaced_job(
            namespace, label_selector=f"{selector},{WORKER}"
        ).items,
        "Services": core.list_namespaced_service(namespace, label_selector=selector).items,
        "ConfigMaps": core.list_namespaced_config_map(namespace, label_selector=selector).items,
    }


def _running(api: Any, namespace: str, kind: str, name: str) -> bool:
    job = _get(api, namespace, kind, name)
    pods = _pods(api, namespace, f"{chaos.JOB_LABEL}={name},{chaos.KIND_LABEL}={kind},{WORKER}")
    phases = [(p.get("status") or {}).get("phase") for p in pods]
    return chaos.is_true(job, "Running") and phases == ["Running"]


@pytest.mark.usefixtures("operator")
def test_same_named_jobs_of_the_three_kinds_run_independently(
    api_client: Any, crds: LocalCluster, namespace: str
) -> None:
    name = "same"
    manifests = _same_named(name)
    kinds = [m["kind"] for m in manifests]
    apply_manifests(crds, namespace, *manifests)
    for kind in kinds:
        try:
            wait_for(lambda kind=kind: _running(api_client, namespace, kind, name), timeout_s=60)
        except pytest.fail.Exception as error:
            raise AssertionError(
                f"{kind} {name} is not running on its own:\n{_explain(api_client, namespace, name)}"
            ) from error

    uids = {kind: _get(api_client, namespace, kind, name)["metadata"]["uid"] for kind in kinds}
    seen: dict[str, set[str]] = {}
    for kind in kinds:
        for what, objects in _children(api_client, namespace, name, kind).items():
            if what == "Services":  # one worker each: they rendezvous on loopback
                assert not objects, f"{kind} {name} of one worker has a Service"
                continue
            assert objects, f"{kind} {name} has no {what} of its own"
            for obj in objects:
                owner = next(o for o in obj.metadata.owner_references if o.controller)
                assert (owner.kind, owner.uid) == (kind, uids[kind]), (what, obj.metadata.name)
                seen.setdefault(what, set())
                assert obj.metadata.name not in seen[what], f"{what} {obj.metadata.name} shared"
                seen[what].add(obj.metadata.name)
        reports = client.CoreV1Api(api_client).list_namespaced_config_map(
            namespace,
            label_selector=f"{chaos.REPORT_LABEL}=true,{chaos.JOB_LABEL}={name},"
            f"{chaos.KIND_LABEL}={kind}",
        )
        assert len(reports.items) == 1, f"{kind}: {len(reports.items)} report ConfigMaps"
        condition = chaos.condition(_get(api_client, namespace, kind, name), "Running") or {}
        assert condition.get("message", "").startswith("1/1 workers running"), condition

    # One at a time: finishing one kind's worker ends that job only.
    for done, kind in enumerate(kinds):
        selector = f"{chaos.JOB_LABEL}={name},{chaos.KIND_LABEL}={kind},{WORKER}"
        [pod] = _pods(api_client, namespace, selector)
        chaos.finish_pod(client.CoreV1Api(api_client), namespace, pod["metadata"]["name"], 0)
        wait_for(
            lambda kind=kind: chaos.terminal_state(_get(api_client, namespace, kind, name)),
            timeout_s=60,
        )
        assert chaos.terminal_state(_get(api_client, namespace, kind, name)) == (
            "Succeeded/Completed"
        )
        for other in kinds[done + 1 :]:
            assert _running(api_client, namespace, other, name), f"{other} stopped with {kind}"


def _explain(api: Any, namespace: str, name: str) -> str:
    """Each kind's Running condition and children, for a failure message."""
    lines = []
    for kind in chaos.PLURALS:
        job = _get(api, namespace, kind, name)
        lines.append(f"{kind}: {chaos.condition(job, 'Running')}")
        for what, objects in _children(api, namespace, name, kind).items():
            lines.append(f"  {what}: {[o.metadata.name for o in objects]}")
    pods = _pods(api, namespace, f"{chaos.JOB_LABEL}={name}")
    lines.append(f"pods: {[(p['metadata']['name'], chaos.owner_key(p)) for p in pods]}")
    return "\n".join(lines)
