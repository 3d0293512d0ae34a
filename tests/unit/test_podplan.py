"""The CPU node agent's pure part: a pod container as argv, environment and mounts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.localcluster import podplan

INDEX_FIELD = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
POD: dict[str, Any] = {
    "metadata": {
        "name": "tiny-a1-1-xyz",
        "namespace": "ns",
        "uid": "u-1",
        "labels": {"batch.kubernetes.io/job-name": "tiny-a1"},
        "annotations": {"batch.kubernetes.io/job-completion-index": "1"},
    },
    "spec": {
        "nodeName": "cpu-node-0",
        "subdomain": "tiny-workers",
        "containers": [
            {
                "name": "trainer",
                "command": ["deepspeed", "--node_rank=$(JOB_COMPLETION_INDEX)", "$(MISSING)"],
                "args": ["--config", "/etc/trainkube/run.json"],
                "env": [
                    {
                        "name": "JOB_COMPLETION_INDEX",
                        "valueFrom": {"fieldRef": {"fieldPath": INDEX_FIELD}},
                    },
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                    {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "m"}}},
                    {"name": "GREETING", "value": "hello $(POD)"},
                ],
                "volumeMounts": [
                    {"name": "ckpt", "mountPath": "/checkpoints", "subPath": "run-1"},
                    {"name": "config", "mountPath": "/etc/trainkube", "readOnly": True},
                ],
            }
        ],
    },
}


def test_environment_resolves_downward_api_secrets_config_maps_and_references() -> None:
    container = POD["spec"]["containers"][0]
    env = podplan.environment(
        POD, container, secrets={"s": {"k": "v"}}, config_maps={"c": {"m": "fast"}}, base={"A": "1"}
    )
    assert env["JOB_COMPLETION_INDEX"] == "1"
    assert env["POD"] == "tiny-a1-1-xyz"
    assert (env["TOKEN"], env["MODE"], env["A"]) == ("v", "fast", "1")
    assert env["GREETING"] == "hello tiny-a1-1-xyz"


def test_command_expands_variables_and_mounts_follow_the_pod_spec(tmp_path: Path) -> None:
    container = POD["spec"]["containers"][0]
    plan = podplan.plan_container(
        POD,
        container,
        volumes={"ckpt": "/claims/ckpt", "config": "/pod/config", "serviceaccount": "/pod/sa"},
        env={"JOB_COMPLETION_INDEX": "1"},
        pod_dir=tmp_path,
    )
    assert plan.argv == [
        "deepspeed",
        "--node_rank=1",
        "$(MISSING)",
        "--config",
        "/etc/trainkube/run.json",
    ]
    targets = {m.target: m for m in plan.mounts}
    assert targets["/checkpoints"].source == "/claims/ckpt/run-1"
    assert targets["/etc/trainkube"].read_only
    assert targets["/etc/hosts"].source == str(tmp_path / "hosts")
    assert targets["/var/run/secrets/kubernetes.io/serviceaccount"].source == "/pod/sa"


def test_hosts_file_names_every_pod_of_the_indexed_job_on_loopback() -> None:
    hosts = podplan.hosts_file(POD, completions=2).splitlines()
    assert hosts[1].split()[:3] == [
        "127.0.0.1",
        "tiny-a1-0.tiny-workers",
        "tiny-a1-0.tiny-workers.ns.svc",
    ]
    assert hosts[2].split()[1] == "tiny-a1-1.tiny-workers"
    assert len(hosts) == 3
