"""Which derived statuses are worth a write of their own (pure).

Every status write is a full update of the job through the apiserver's validation, and an event
on every watch of the job. Two changes need no write of their own: the next real change carries
them, and losing them in a crash loses nothing, since the next reconcile derives them again.

- The open attempt's batch Job adopted by uid (`attempts[].jobUid`). Until it is written, a Job
  that vanishes is created again under the same attempt number (after every pod of the job has
  stopped) rather than counted as a deleted attempt; from the first real write on (at the latest
  when the workers run) a vanished Job ends its attempt as `AttemptDeleted`.
- The goodput figures, which move with the clock.
"""

from __future__ import annotations

from typing import Any

from trainkube.api.status import JobStatus


def _settled(status: JobStatus, *, adopting: bool) -> dict[str, Any]:
    """`status` without what `worth_writing` leaves for the next write."""
    attempts = list(status.attempts)
    if adopting and attempts:
        attempts[-1] = attempts[-1].model_copy(update={"job_uid": None})
    return status.model_copy(update={"attempts": attempts, "goodput": None}).to_wire()


def worth_writing(current: JobStatus, new: JobStatus) -> bool:
    """Whether `new` says something `current` (the status as last written) does not, beyond an
    adoption of the open attempt's batch Job by uid and the goodput figures."""
    if new.to_wire() == current.to_wire():
        return False
    last = current.attempts[-1] if current.attempts else None
    adopting = (
        last is not None
        and last.job_uid is None
        and bool(new.attempts)
        and new.attempts[-1].number == last.number
    )
    return _settled(new, adopting=adopting) != _settled(current, adopting=adopting)
