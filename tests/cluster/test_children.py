"""Children the apiserver refuses: the job says which and why, in a condition; an invalid one
fails the job, a forbidden one (a quota) is tried again until it passes. Never a log line
retried forever."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from tests.cluster.test_operator import _apply, _condition, _job, _training_job, _wait_condition
from tests.conftest import wait_for
from tests.localcluster.cluster import LocalCluster

pytestmark = pytest.mark.usefixtures("operator")


def test_an_attempt_job_the_apiserver_finds_invalid_fails_the_job_with_its_message(
    api_client: Any, crds: LocalCluster, namespace: str
) -> None:
    # Two volume types in one volume: the schema of the job lets `source` through as written,
    # the batch Job's validation does not.
    volume = {
        "name": "scratch",
        "mountPath": "/scratch",
        "source": {"emptyDir": {}, "configMap": {"name": "settings"}},
    }
    manifest = _training_job("twosources", nodes_=1, gpus=1)
    manifest["spec"]["template"]["volumes"] = [volume]
    _apply(crds, namespace, manifest)
    failed = _wait_condition(api_client, namespace, "twosources", "Failed")
    assert failed["reason"] == "ChildRejected"
    assert "twosources-ltj-a1" in failed["message"]
    assert "may not specify more than 1 volume type" in failed["message"]
    status = _job(api_client, namespace, "twosources")["status"]
    assert [(a["number"], a["reason"]) for a in status["attempts"]] == [(1, "ChildRejected")]


def test_a_quota_that_refuses_the_attempt_is_named_and_the_job_starts_once_it_lifts(
    api_client: Any, crds: LocalCluster, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    quota = client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="no-jobs"),
        spec=client.V1ResourceQuotaSpec(hard={"count/jobs.batch": "0"}),
    )
    core.create_namespaced_resource_quota(namespace, quota)
    wait_for(lambda: core.read_namespaced_resource_quota("no-jobs", namespace).status.hard)
    _apply(crds, namespace, _training_job("quota", nodes_=1, gpus=1))
    refused = _wait_condition(api_client, namespace, "quota", "Running", status="False")
    refused = wait_for(
        lambda: (
            (c := _condition(_job(api_client, namespace, "quota"), "Running"))
            and c["reason"] == "ChildRejected"
            and c
        ),
        timeout_s=30,
    )
    assert "exceeded quota: no-jobs" in refused["message"]
    assert _condition(_job(api_client, namespace, "quota"), "Failed") is None

    core.delete_namespaced_resource_quota("no-jobs", namespace)
    _wait_condition(api_client, namespace, "quota", "Running", timeout_s=60)
    status = _job(api_client, namespace, "quota")["status"]
    assert [a["number"] for a in status["attempts"]] == [1]


def test_workers_are_admitted_where_the_namespace_enforces_restricted_pod_security(
    api_client: Any, crds: LocalCluster, namespace: str
) -> None:
    # The apiserver's own PodSecurity admission judges the pods the Job controller creates: a
    # pod that breaks `restricted` is refused, and no worker would ever run.
    core = client.CoreV1Api(api_client)
    enforce = {"pod-security.kubernetes.io/enforce": "restricted"}
    core.patch_namespace(namespace, {"metadata": {"labels": enforce}})
    _apply(crds, namespace, _training_job("restricted", nodes_=2, gpus=1))
    running = _wait_condition(api_client, namespace, "restricted", "Running")
    assert running["message"].startswith("2/2 workers running")
