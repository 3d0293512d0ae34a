"""Output records: where a succeeded job's model went, kept after the job is deleted.

A job's status says where its output is, but status goes with the job: deleting it (by hand or
by `ttlSecondsAfterFinished`) would leave a later `fromJob` consumer waiting forever for a job
that "does not exist (yet)", though the model is still on its claim. So when a job succeeds, the
operator first writes a ConfigMap `<job>-<kind>-output` in its namespace, owned by nothing,
holding the output's location and the job's model source (which the planner needs for its
shape), and only then the `Succeeded` status. A consumer whose job is gone reads the record; if
the claim in it is gone too, the consumer fails and names it. Records are a few hundred bytes;
`kubectl delete configmap -l trainkube.io/output-record=true` removes them when you are done.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from trainkube.api.finetunejob import FineTuneJob
from trainkube.api.llmtrainingjob import LLMTrainingJob
from trainkube.api.model import ModelSource
from trainkube.api.status import Output
from trainkube.controller import naming
from trainkube.controller.runspec import Job


@dataclass(frozen=True)
class Record:
    """What an output record says: the job it came from, its output and its model source."""

    kind: str
    name: str
    uid: str
    output: Output
    source: ModelSource | None

    def claims(self) -> list[str]:
        """The claims the output lives on (`claim:path` locations)."""
        paths = (self.output.model_path, self.output.adapter_path)
        return sorted({path.split(":", 1)[0] for path in paths if path and ":" in path})


def _source(job: Job) -> ModelSource | None:
    if isinstance(job, LLMTrainingJob):
        return job.spec.model
    if isinstance(job, FineTuneJob):
        return job.spec.base_model
    return None


def record(body: dict[str, Any], job: Job, output: Output) -> dict[str, Any]:
    """The output record ConfigMap of `job` (not owned: it outlives the job)."""
    kind, name = body["kind"], body["metadata"]["name"]
    labels = naming.labels(kind=kind, job=name, component="output")
    labels[naming.OUTPUT_RECORD_LABEL] = "true"
    source = _source(job)
    data = {
        "job.json": json.dumps({"kind": kind, "name": name, "uid": body["metadata"]["uid"]}),
        "output.json": json.dumps(output.to_wire(), sort_keys=True),
    }
    if source is not None:
        data["source.json"] = json.dumps(source.to_wire(), sort_keys=True)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": naming.output_record_name(kind, name),
            "namespace": body["metadata"]["namespace"],
            "labels": labels,
        },
        "data": data,
    }


def parse(data: dict[str, str] | None) -> Record | None:
    """A record from a ConfigMap's data; None when it is not one (or not readable)."""
    try:
        job = json.loads((data or {})["job.json"])
        output = Output.model_validate(json.loads((data or {})["output.json"]))
        text = (data or {}).get("source.json")
        source = ModelSource.model_validate(json.loads(text)) if text else None
    except (KeyError, TypeError, ValueError):
        return None
    return Record(
        kind=str(job["kind"]),
        name=str(job["name"]),
        uid=str(job["uid"]),
        output=output,
        source=source,
    )
