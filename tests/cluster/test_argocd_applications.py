"""The Argo CD examples (examples/argocd/) against Argo CD's own schema, on a real apiserver: the
Application and AppProject CRDs of Argo CD v3.5.1 (vendored in tests/argocd/crds/) are installed
into the local cluster, and each example file is applied with `kubectl apply --dry-run=server`
and strict field validation, so an unknown field, a wrong type or a missing required field is
refused as Argo CD's own cluster would refuse it. Nothing is created; the CRDs and the `argocd`
namespace are removed again afterwards."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.localcluster.cluster import ClusterError, LocalCluster

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "argocd"
ARGOCD_CRDS = REPO / "tests" / "argocd" / "crds"
CRD_NAMES = ("applications.argoproj.io", "appprojects.argoproj.io")


@pytest.fixture(scope="module")
def argocd(local_cluster: LocalCluster) -> Iterator[LocalCluster]:
    """The cluster with Argo CD's CRDs (server-side: the Application CRD is 400 kB) and the
    `argocd` namespace the examples name."""
    cluster = local_cluster
    for path in sorted(ARGOCD_CRDS.glob("*-crd.yaml")):
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    cluster.wait_condition("Established", *[f"crd/{name}" for name in CRD_NAMES])
    namespaces = json.loads(cluster.kubectl("get", "namespaces", "-o", "json"))["items"]
    created = "argocd" not in {n["metadata"]["name"] for n in namespaces}
    if created:
        cluster.kubectl("create", "namespace", "argocd")
    yield cluster
    if created:
        cluster.kubectl("delete", "namespace", "argocd", "--wait=false")
    cluster.kubectl("delete", "crd", *CRD_NAMES, "--wait=false")


def _dry_run(cluster: LocalCluster, manifest: str) -> str:
    return cluster.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-", input_text=manifest
    )


@pytest.mark.parametrize("name", ["projects.yaml", "operator.yaml", "jobs.yaml"])
def test_each_example_passes_argo_cds_schema_on_a_real_apiserver(
    argocd: LocalCluster, name: str
) -> None:
    path = EXAMPLES / name
    output = argocd.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", str(path))
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    expected = [
        f"{doc['kind'].lower()}.argoproj.io/{doc['metadata']['name']} created (server dry run)"
        for doc in documents
    ]
    assert output.splitlines() == expected


def _broken(change: str) -> str:
    """operator.yaml with one mistake a user could make."""
    app: dict[str, Any] = yaml.safe_load((EXAMPLES / "operator.yaml").read_text())
    broken = copy.deepcopy(app)
    sync = broken["spec"]["syncPolicy"]
    if change == "misspelt":
        sync["syncOption"] = sync.pop("syncOptions")
    elif change == "wrong type":
        sync["automated"]["selfHeal"] = "yes"
    elif change == "missing":
        del broken["spec"]["destination"]
    return yaml.safe_dump(broken)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("misspelt", 'unknown field "spec.syncPolicy.syncOption"'),
        ("wrong type", "spec.syncPolicy.automated.selfHeal: Invalid value"),
        ("missing", "spec.destination: Required value"),
    ],
)
def test_the_same_dry_run_refuses_a_broken_application_naming_the_field(
    argocd: LocalCluster, change: str, message: str
) -> None:
    with pytest.raises(ClusterError) as refused:
        _dry_run(argocd, _broken(change))
    assert message in str(refused.value)
