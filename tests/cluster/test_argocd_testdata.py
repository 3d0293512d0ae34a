"""The Argo CD health checks' testdata (charts/trainkube/argocd/trainkube.io/<Kind>/testdata) are
jobs captured from a cluster by tests/argocd/capture.py. These tests check that they still fit
today's CRDs: each captured spec and status goes through the apiserver with strict field
validation and comes back as captured. A field the API renamed or removed, or a value it no
longer accepts, fails here: the testdata no longer show what the operator writes, capture them
again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.localcluster.cluster import LocalCluster

REPO = Path(__file__).resolve().parents[2]
TESTDATA = sorted(
    (REPO / "charts" / "trainkube" / "argocd" / "trainkube.io").glob("*/testdata/*.yaml")
)
GROUP, VERSION = "trainkube.io", "v1alpha1"
PLURALS = {
    "LLMTrainingJob": "llmtrainingjobs",
    "FineTuneJob": "finetunejobs",
    "EvalJob": "evaljobs",
}


def _missing(captured: Any, stored: Any, where: str = "") -> list[str]:
    """Where `stored` lacks or changed what `captured` holds (extra fields in `stored` are fine:
    defaults the API added since)."""
    if isinstance(captured, dict) and isinstance(stored, dict):
        return [
            problem
            for key, value in captured.items()
            for problem in (
                _missing(value, stored[key], f"{where}.{key}")
                if key in stored
                else [f"{where}.{key}: dropped"]
            )
        ]
    if isinstance(captured, list) and isinstance(stored, list) and len(captured) == len(stored):
        # Item by item: a default the API added since inside an item is fine too.
        return [
            problem
            for index, (item, back) in enumerate(zip(captured, stored, strict=True))
            for problem in _missing(item, back, f"{where}[{index}]")
        ]
    if captured != stored:
        return [f"{where}: {captured!r} came back as {stored!r}"]
    return []


def test_every_kind_has_captured_testdata() -> None:
    kinds = {path.parent.parent.name for path in TESTDATA}
    assert kinds == set(PLURALS)


@pytest.mark.parametrize("path", TESTDATA, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_captured_job_goes_through_todays_crds_unchanged(
    path: Path, api_client: Any, crds: LocalCluster, namespace: str
) -> None:
    captured = yaml.safe_load(path.read_text())
    plural = PLURALS[captured["kind"]]
    custom = client.CustomObjectsApi(api_client)
    # Suspended, so that an operator this session runs starts no workers for it.
    spec = {**captured["spec"], "suspend": True}
    body = {
        "apiVersion": captured["apiVersion"],
        "kind": captured["kind"],
        "metadata": {"name": captured["metadata"]["name"]},
        "spec": spec,
    }
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, body, field_validation="Strict"
    )
    assert _missing(spec, created["spec"]) == []
    if "status" not in captured:
        return
    for _ in range(10):  # an operator may write the status meanwhile: read again, try again
        current: dict[str, Any] = custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, body["metadata"]["name"]
        )
        try:
            stored = custom.replace_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                plural,
                body["metadata"]["name"],
                {**current, "status": captured["status"]},
                dry_run="All",
                field_validation="Strict",
            )
        except ApiException as error:
            if error.status == 409:
                continue
            raise
        assert _missing(captured["status"], stored["status"]) == []
        return
    pytest.fail("the status kept changing: no dry-run write went through in 10 tries")
