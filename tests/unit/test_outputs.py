"""Outputs outlive their job: the checkpoint claim is not owned by the job unless
whenJobDeleted says Delete, and the output record (not owned either) says where a succeeded
job's model went, for consumers that come after the job is gone. Pure functions."""

from __future__ import annotations

import copy

from tests.unit.test_controller import JOB, PRETRAIN
from trainkube.api.llmtrainingjob import LLMTrainingJob
from trainkube.api.status import Output
from trainkube.controller import children, outputs


def test_the_checkpoint_claim_is_not_owned_by_the_job_by_default() -> None:
    claim = children.checkpoint_claim(PRETRAIN, JOB)
    assert claim is not None
    assert "ownerReferences" not in claim["metadata"]
    assert claim["metadata"]["labels"]["trainkube.io/job"] == "tiny-pretrain"


def test_when_job_deleted_delete_makes_the_claim_owned_by_the_job() -> None:
    body = copy.deepcopy(PRETRAIN)
    body["spec"]["checkpoints"]["createVolume"]["whenJobDeleted"] = "Delete"
    claim = children.checkpoint_claim(body, LLMTrainingJob.model_validate(body))
    assert claim is not None
    (owner,) = claim["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "LLMTrainingJob",
        "tiny-pretrain",
        "uid-1",
    )


def test_an_output_record_is_unowned_and_reads_back_with_output_and_model_source() -> None:
    output = Output(model_path="tiny-pretrain-ltj-checkpoints:final/model")
    manifest = outputs.record(PRETRAIN, JOB, output)
    meta = manifest["metadata"]
    assert meta["name"] == "tiny-pretrain-ltj-output"
    assert "ownerReferences" not in meta
    assert meta["labels"]["trainkube.io/output-record"] == "true"
    record = outputs.parse(manifest["data"])
    assert record is not None
    assert (record.kind, record.name, record.uid) == ("LLMTrainingJob", "tiny-pretrain", "uid-1")
    assert record.output == output
    assert record.source == JOB.spec.model  # the planner needs the model's shape
    assert record.claims() == ["tiny-pretrain-ltj-checkpoints"]


def test_a_configmap_that_is_not_a_record_parses_to_none() -> None:
    assert outputs.parse({"progress.json": "{}"}) is None
    assert outputs.parse({"job.json": "not json", "output.json": "{}"}) is None
    assert outputs.parse(None) is None
