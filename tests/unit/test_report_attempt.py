"""The report channel speaks for the current attempt only: documents a worker of an ended
attempt writes late are not read into status."""

from __future__ import annotations

from trainkube.controller.report import of_attempt, progress


def test_documents_of_an_older_attempt_are_ignored() -> None:
    report = {
        "progress.json": {"attempt": 1, "step": 280, "totalSteps": 600, "events": []},
        "result.json": {"attempt": 1, "outcome": "failed"},
    }
    assert of_attempt(report, 2) == {}
    assert progress(of_attempt(report, 2), "now") is None


def test_documents_of_the_current_attempt_are_kept() -> None:
    current = {"attempt": 2, "step": 40, "totalSteps": 600, "events": []}
    report = {"progress.json": current, "result.json": {"attempt": 1, "outcome": "failed"}}
    assert of_attempt(report, 2) == {"progress.json": current}
    found = progress(of_attempt(report, 2), "now")
    assert found is not None
    assert found.steps == "40/600"
