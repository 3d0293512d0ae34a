"""Child names and labels: they carry the kind, fit Kubernetes' limits for any job name the API
accepts, and never collide for two different long names."""

from __future__ import annotations

import re

import pytest

from trainkube.controller import naming

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
KINDS = ("LLMTrainingJob", "FineTuneJob", "EvalJob")


def test_jobs_of_different_kinds_with_one_name_get_different_children() -> None:
    for make in (
        naming.service_name,
        naming.report_name,
        naming.account_name,
        naming.checkpoint_claim_name,
    ):
        assert len({make(kind, "x") for kind in KINDS}) == 3
    assert [naming.attempt_job_name(kind, "x", 1) for kind in KINDS] == [
        "x-ltj-a1",
        "x-ftj-a1",
        "x-evj-a1",
    ]
    assert len({tuple(sorted(naming.selector(kind, "x").items())) for kind in KINDS}) == 3


@pytest.mark.parametrize("length", [1, 40, 52, 63, 64, 200, 253])
def test_names_and_labels_fit_their_limits_for_any_job_name(length: int) -> None:
    name = ("a" * (length - 1) + "z")[:length]
    for kind in KINDS:
        job = naming.attempt_job_name(kind, name, 12)
        assert len(job) <= 52  # room for pod names <job>-<index>-xxxxx
        assert DNS_LABEL.match(job)
        service = naming.service_name(kind, name)
        assert len(service) <= 63
        assert DNS_LABEL.match(service)
        assert len(naming.report_name(kind, name)) <= 253
        label = naming.job_label(kind, name)
        assert len(label) <= 63
        assert DNS_LABEL.match(label)
        assert naming.labels(kind=kind, job=name, component="worker")[naming.JOB_LABEL] == label


def test_two_long_names_with_one_prefix_do_not_collide() -> None:
    first, second = "p" * 70 + "-one", "p" * 70 + "-two"
    for kind in KINDS:
        assert naming.attempt_job_name(kind, first, 1) != naming.attempt_job_name(kind, second, 1)
        assert naming.job_label(kind, first) != naming.job_label(kind, second)


def test_a_child_maps_back_to_its_owner_by_labels() -> None:
    child = {
        "metadata": {
            "namespace": "ns",
            "labels": naming.labels(kind="FineTuneJob", job="x", component="worker"),
        }
    }
    assert naming.owner_key(child) == ("ns", "FineTuneJob", "x")
    assert naming.owner_key({"metadata": {"namespace": "ns", "labels": {}}}) is None
