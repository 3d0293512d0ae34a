"""The trainer's report (the ConfigMap rank 0 writes): progress, checkpoints, evaluation results
and the events of the current attempt, read into status."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from trainkube.api.evaljob import GateResult, MetricResult
from trainkube.api.status import (
    Attempt,
    CheckpointInterval,
    CheckpointRecord,
    Progress,
    RollbackRecord,
    SkipRange,
)


def progress(report: dict[str, Any], now: str) -> Progress | None:
    progress = report.get("progress.json")
    if not progress:
        return None
    step, total = progress.get("step"), progress.get("totalSteps")
    loss = progress.get("loss")
    return Progress(
        step=int(step or 0),
        total_steps=total,
        steps=f"{step}/{total}" if step is not None and total else None,
        loss=f"{loss:.4f}" if isinstance(loss, int | float) else None,
        validation_loss=f"{progress['validationLoss']:.4f}"
        if isinstance(progress.get("validationLoss"), int | float)
        else None,
        learning_rate=progress.get("learningRate"),
        tokens_per_second=progress.get("tokensPerSecond"),
        updated=progress.get("updated") or now,
    )


def interval(report: dict[str, Any]) -> CheckpointInterval | None:
    """The interval the trainer chose (interval auto), as it reported it."""
    found = (report.get("progress.json") or {}).get("checkpointInterval")
    try:
        return CheckpointInterval.model_validate(found) if found else None
    except ValueError:
        return None


def checkpoints(report: dict[str, Any], known: list[CheckpointRecord]) -> list[CheckpointRecord]:
    """Checkpoints on the volume: every one reported, less those retention has removed; one the
    trainer skipped on resuming (its checksums did not verify) is kept, marked not valid."""
    by_step = {c.step: c for c in known}
    kept: list[int] | None = None
    abandoned: set[int] = {
        c.step for c in known if c.invalid_reason and "abandoned" in c.invalid_reason
    }
    for event in (report.get("progress.json") or {}).get("events", []):
        if event.get("type") == "checkpointsAbandoned":
            why = f"abandoned: {event.get('reason') or 'a rollback went back before it'}"
            for step in event.get("steps") or []:
                record = by_step.get(step) or CheckpointRecord(step=step)
                by_step[step] = record.model_copy(update={"valid": False, "invalid_reason": why})
                abandoned.add(step)
        if event.get("type") == "checkpointSkipped" and isinstance(event.get("step"), int):
            step = event["step"]
            record = by_step.get(step) or CheckpointRecord(step=step, time=event.get("time"))
            reason = str(event.get("reason") or "its checksums did not verify")
            by_step[step] = record.model_copy(update={"valid": False, "invalid_reason": reason})
        if event.get("type") == "checkpoint":
            kept = event.get("kept", kept)
            by_step[int(event["step"])] = CheckpointRecord(
                step=int(event["step"]),
                loss=f"{event['loss']:.4f}" if isinstance(event.get("loss"), int | float) else None,
                time=event.get("time"),
                size_bytes=event.get("bytes"),
                path=event.get("path"),
                data_position=event.get("dataPosition"),
                seconds=event.get("seconds")
                if isinstance(event.get("seconds"), int | float)
                else None,
            )
    # An abandoned checkpoint stays listed (not valid, and why) while retention forgets it.
    return [by_step[s] for s in sorted(by_step) if kept is None or s in kept or s in abandoned]


@dataclass(frozen=True)
class InProcessRollback:
    """A rollback the workers made in place, as the trainer reported it: its number within the
    attempt (what makes recording it idempotent), the record for status.rollbacks, the
    learning-rate factor it left and the batches it skipped."""

    number: int
    record: RollbackRecord
    learning_rate_factor: float
    skipped: SkipRange | None


def in_process_rollbacks(report: dict[str, Any], attempt: int) -> list[InProcessRollback]:
    """Every in-process rollback of attempt `attempt` its trainer reported, oldest first. The
    trainer keeps the whole list in progress.json (not only in the recent events), so a
    reconcile that comes late, or an operator that restarted, still finds each one."""
    found: list[InProcessRollback] = []
    for entry in (report.get("progress.json") or {}).get("rollbacks") or []:
        try:
            skipped = entry.get("skipped")
            found.append(
                InProcessRollback(
                    number=int(entry["number"]),
                    record=RollbackRecord(
                        detected_at_step=int(entry["detectedAtStep"]),
                        loss=str(entry.get("loss")),
                        rule=str(entry.get("rule", "")),
                        from_checkpoint_step=int(entry["fromCheckpointStep"]),
                        learning_rate=float(entry["learningRate"]),
                        skipped_batches=int(entry.get("skippedBatches") or 0),
                        time=str(entry["time"]),
                        in_process=True,
                        attempt=attempt,
                    ),
                    learning_rate_factor=float(entry["learningRateFactor"]),
                    skipped=SkipRange(start=skipped[0], end=skipped[1]) if skipped else None,
                )
            )
        except (KeyError, TypeError, ValueError, IndexError):
            continue
    return sorted(found, key=lambda r: r.number)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def eval_results(report: dict[str, Any]) -> dict[str, Any]:
    """An EvalJob's results, gate verdicts and passed/total from the trainer's last report."""
    progress = report.get("progress.json") or {}
    if "results" not in progress:
        return {}
    return {
        "results": [MetricResult.model_validate(r) for r in progress["results"]],
        "gates": [GateResult.model_validate(g) for g in progress.get("gates", [])],
        "gates_passed": progress.get("gatesPassed"),
    }


def with_resume_step(attempts: list[Attempt], report: dict[str, Any]) -> list[Attempt]:
    """The step the latest attempt resumed from, as its trainer reported it."""
    progress = report.get("progress.json") or {}
    if not attempts or progress.get("attempt") != attempts[-1].number:
        return attempts
    for event in progress.get("events", []):
        if event.get("type") == "resumed" and attempts[-1].resumed_from_step is None:
            attempts[-1] = attempts[-1].model_copy(update={"resumed_from_step": event["step"]})
    return attempts


def with_steps(attempts: list[Attempt], report: dict[str, Any]) -> list[Attempt]:
    """The latest attempt's last step, and when its first step was seen, from its report."""
    progress = report.get("progress.json") or {}
    if not attempts or progress.get("attempt") != attempts[-1].number:
        return attempts
    last = progress.get("lastStep")
    if not isinstance(last, int):
        return attempts
    latest = attempts[-1]
    update: dict[str, Any] = {"last_step": last}
    if latest.first_step_time is None:
        update["first_step_time"] = progress.get("lastStepAt")
    return [*attempts[:-1], latest.model_copy(update=update)]


def parse_report(data: dict[str, str] | None) -> dict[str, Any]:
    """The report ConfigMap's data, parsed (unreadable documents are ignored)."""
    parsed: dict[str, Any] = {}
    for key, text in (data or {}).items():
        try:
            parsed[key] = json.loads(text)
        except ValueError:
            continue
    return parsed


def of_attempt(report: dict[str, Any], attempt: int) -> dict[str, Any]:
    """Only the documents the trainer of attempt `attempt` wrote. A worker of an ended attempt
    may still write (a rank 0 finishing a save while its pod is deleted): what it says is about
    a run that is over, and must not overwrite the current attempt's progress or checkpoints."""
    return {
        key: document
        for key, document in report.items()
        if isinstance(document, dict) and document.get("attempt") == attempt
    }
