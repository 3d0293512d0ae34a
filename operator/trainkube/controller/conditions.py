"""Conditions in the metav1 shape: set one, read one, and the Events their changes make.
`lastTransitionTime` moves only when a condition's status changes (as
`meta.SetStatusCondition` does)."""

from __future__ import annotations

from dataclasses import dataclass, field

from trainkube.api.status import Condition, ConditionType, JobStatus, Reason

TERMINAL = (ConditionType.SUCCEEDED, ConditionType.FAILED)


def condition(conditions: list[Condition], kind: ConditionType) -> Condition | None:
    return next((c for c in conditions if c.type == kind), None)


def is_set(conditions: list[Condition], kind: ConditionType) -> bool:
    found = condition(conditions, kind)
    return found is not None and found.status == "True"


def is_true(status: JobStatus, kind: ConditionType) -> bool:
    return is_set(status.conditions, kind)


def is_finished(status: JobStatus) -> bool:
    return any(is_true(status, kind) for kind in TERMINAL)


def set_condition(
    conditions: list[Condition],
    kind: ConditionType,
    value: bool,
    reason: Reason,
    message: str,
    *,
    now: str,
    generation: int,
) -> tuple[list[Condition], bool]:
    """Conditions with `kind` set; whether its status or reason changed (an Event-worthy change)."""
    old = condition(conditions, kind)
    text = "True" if value else "False"
    changed = old is None or old.status != text or old.reason != reason
    new = Condition(
        type=kind,
        status=text,
        reason=reason,
        message=message,
        last_transition_time=now if old is None or old.status != text else old.last_transition_time,
        observed_generation=generation,
    )
    return [c for c in conditions if c.type != kind] + [new], changed


@dataclass
class Conditions:
    """Conditions being updated in one reconcile, and the Events their changes make."""

    items: list[Condition]
    now: str
    generation: int
    events: list[tuple[str, str, str]] = field(default_factory=list)

    def mark(
        self,
        kind: ConditionType,
        value: bool,
        reason: Reason,
        message: str,
        warn: bool = False,
        event: bool = True,
    ) -> None:
        """Set a condition; its change makes an Event unless `event` is False."""
        self.items, changed = set_condition(
            self.items, kind, value, reason, message, now=self.now, generation=self.generation
        )
        posted = ("Warning" if warn else "Normal", reason.value, message)
        wanted = event and (value or kind is ConditionType.RUNNING)
        if changed and wanted and posted not in self.events:
            self.events.append(posted)

    def true(self, kind: ConditionType) -> bool:
        return is_set(self.items, kind)
