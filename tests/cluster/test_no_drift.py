"""A job kept in Git (Argo CD) shows no drift: after the operator has run it, for real, to the
end, the job still equals its manifest under the apiserver's own comparison.

Two copies of the smallest real job the cluster tests run (the demo's tiny pre-training, on two
workers of the CPU trainer image on the real node) are applied the two ways Argo CD applies:
server-side (`ServerSideApply=true`: `kubectl apply --server-side --force-conflicts` as field
manager `argocd-controller`) and client-side (`kubectl apply`, with its last-applied
annotation). While each runs and after it succeeded, `kubectl diff` finds nothing: neither
`--server-side` (a dry-run of the same server-side apply compared with the live object, as Argo
CD's ServerSideDiff=true does) after either apply, nor the client-side diff (three-way, with the
last-applied annotation, like Argo CD's default diff) after the client-side one. The operator
changed nothing in spec, labels or annotations and added no finalizer. Since a server-side apply
leaves fields of other managers alone, the diff alone would not see a label the operator added:
the live metadata and managedFields are checked as well (everything but the applier's is
`status`).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.test_jobs_on_real_node import _tiny
from tests.cluster.test_operator import _job
from tests.conftest import wait_for
from tests.localcluster.cluster import LocalCluster

ARGOCD_MANAGER = "argocd-controller"  # Argo CD's field manager for server-side apply
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
APPLY = {
    "server-side": ["--server-side", f"--field-manager={ARGOCD_MANAGER}", "--force-conflicts"],
    "client-side": [],
}
# The diffs Argo CD may compare with after each apply: its server-side diff
# (ServerSideDiff=true, a dry-run server-side apply) after either, and its default client-side
# diff (three-way, with the last-applied annotation) after a client-side apply.
SERVER_SIDE_DIFF = ["--server-side", f"--field-manager={ARGOCD_MANAGER}", "--force-conflicts"]
DIFFS = {
    "server-side": {"server-side": SERVER_SIDE_DIFF},
    "client-side": {"server-side": SERVER_SIDE_DIFF, "client-side": []},
}
# The manager of each apply, as managedFields names it.
MANAGER = {
    "server-side": (ARGOCD_MANAGER, "Apply"),
    "client-side": ("kubectl-client-side-apply", "Update"),
}
STEPS = 40  # long enough to be seen Running


def _kubectl(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    """kubectl with its exit status (`kubectl diff`: 0 no difference, 1 differences, more: an
    error)."""
    return subprocess.run(
        [str(cluster.bin_dir / "kubectl"), f"--kubeconfig={cluster.kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@dataclass
class Applied:
    """One job, applied one way, and what `kubectl diff` said about it at each moment."""

    how: str
    manifest: dict[str, Any]
    path: Path
    diffs: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])


def _manifest(name: str, namespace: str) -> dict[str, Any]:
    """The tiny job, with a label and the annotation Argo CD's tracking puts on what it syncs."""
    manifest = _tiny(name, steps=STEPS)
    manifest["metadata"]["namespace"] = namespace
    manifest["metadata"]["labels"] = {"app.kubernetes.io/part-of": "no-drift"}
    manifest["metadata"]["annotations"] = {
        "argocd.argoproj.io/tracking-id": f"jobs:trainkube.io/LLMTrainingJob:{namespace}/{name}"
    }
    return manifest


def _diff(cluster: LocalCluster, job: Applied, moment: str) -> None:
    for kind, flags in DIFFS[job.how].items():
        job.diffs[f"{kind} diff, {moment}"] = _kubectl(cluster, "diff", *flags, "-f", str(job.path))


def _phase(api: Any, job: Applied) -> str:
    return str(
        (_job(api, job.manifest["metadata"]["namespace"], job.name).get("status") or {}).get(
            "phase", ""
        )
    )


@pytest.fixture(scope="module")
def ran(
    crds: LocalCluster,
    api_client: Any,
    operator: Any,
    trainer_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Applied]]:
    """Both jobs applied at once, diffed once each is Running (the trainer has reported a
    step) and again once it succeeded."""
    folder = tmp_path_factory.mktemp("no-drift")
    namespace = f"no-drift-{secrets.token_hex(3)}"
    crds.kubectl("create", "namespace", namespace)
    jobs = {}
    for how in APPLY:
        manifest = _manifest(f"drift-{how}", namespace)
        path = folder / f"{how}.yaml"
        path.write_text(yaml.safe_dump(manifest))
        jobs[how] = Applied(how, manifest, path)
    try:
        applied = time.monotonic()
        for job in jobs.values():
            crds.kubectl("apply", *APPLY[job.how], "-f", str(job.path))

        def diffed_while_running() -> bool:
            """Diff each job as soon as it is seen Running with progress; True once both are."""
            for job in jobs.values():
                if any(key.endswith("running") for key in job.diffs):
                    continue
                status = _job(api_client, namespace, job.name).get("status") or {}
                if status.get("phase") in ("Succeeded", "Failed"):
                    pytest.fail(f"{job.name} ended before it was seen running: {status}")
                if status.get("phase") == "Running" and status.get("progress"):
                    _diff(crds, job, "running")
            return all(len(job.diffs) == len(DIFFS[job.how]) for job in jobs.values())

        wait_for(diffed_while_running, timeout_s=300, interval_s=0.2)
        for job in jobs.values():
            wait_for(
                lambda job=job: _phase(api_client, job) in ("Succeeded", "Failed"),
                timeout_s=300,
                interval_s=1,
            )
            _diff(crds, job, "succeeded")
        print(f"\nboth jobs applied, run and diffed in {time.monotonic() - applied:.0f} s")
        yield jobs
    finally:
        crds.kubectl("delete", "namespace", namespace, "--wait=false")


def _live(cluster: LocalCluster, job: Applied) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(
        cluster.kubectl(
            "get",
            "llmtrainingjob",
            job.name,
            "-n",
            job.manifest["metadata"]["namespace"],
            "-o",
            "json",
            "--show-managed-fields",
        )
    )
    return found


@pytest.mark.parametrize("how", list(APPLY))
def test_a_job_that_ran_to_the_end_has_no_diff_against_its_manifest(
    ran: dict[str, Applied], crds: LocalCluster, how: str
) -> None:
    job = ran[how]
    live = _live(crds, job)
    assert live["status"]["phase"] == "Succeeded", live["status"].get("conditions")
    assert live["status"]["progress"]["steps"] == f"{STEPS}/{STEPS}"
    assert len(job.diffs) == 2 * len(DIFFS[how])
    for what, done in job.diffs.items():
        assert (done.returncode, done.stdout, done.stderr) == (0, "", ""), what


@pytest.mark.parametrize("how", list(APPLY))
def test_the_operator_wrote_only_status_no_finalizer_label_or_annotation(
    ran: dict[str, Applied], crds: LocalCluster, how: str
) -> None:
    job = ran[how]
    live = _live(crds, job)
    meta, wanted = live["metadata"], job.manifest["metadata"]
    assert "finalizers" not in meta
    assert meta["labels"] == wanted["labels"]
    annotations = dict(meta["annotations"])
    if how == "client-side":
        assert json.loads(annotations.pop(LAST_APPLIED)) == job.manifest
    assert annotations == wanted["annotations"]
    assert meta["generation"] == 1  # the spec was never written after the apply
    # Every field outside status belongs to the apply; whoever else wrote, wrote status.
    appliers = {
        (m["manager"], m["operation"])
        for m in meta["managedFields"]
        if m.get("subresource") != "status"
    }
    assert appliers == {MANAGER[how]}
    status_writers = [m for m in meta["managedFields"] if m.get("subresource") == "status"]
    assert status_writers, "the operator's status writes are missing from managedFields"
    print(f"status written by {sorted({m['manager'] for m in status_writers})}")


def test_the_diff_sees_a_change_to_a_jobs_spec(
    crds: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    """The check above can fail: a job (suspended, so nothing runs) whose spec was edited
    after the apply differs from its manifest, and the diff names the field."""
    manifest = _manifest("edited", namespace)
    manifest["spec"]["suspend"] = True
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(manifest))
    crds.kubectl("apply", *APPLY["server-side"], "-f", str(path))
    patch = {"spec": {"training": {"maxSteps": STEPS + 1}}}
    crds.kubectl(
        "patch",
        "llmtrainingjob",
        "edited",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps(patch),
    )
    done = _kubectl(crds, "diff", *SERVER_SIDE_DIFF, "-f", str(path))
    assert done.returncode == 1, done.stderr
    assert f"-    maxSteps: {STEPS + 1}" in done.stdout
    assert f"+    maxSteps: {STEPS}" in done.stdout
