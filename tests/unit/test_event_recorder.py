"""The Event recorder: every Event posted once, in order, off the reconcile's thread; what
waits when the operator stops is posted; beyond the backlog the oldest give way."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest

from trainkube.controller import events

JOB = {
    "apiVersion": "trainkube.io/v1alpha1",
    "kind": "LLMTrainingJob",
    "metadata": {"name": "tiny", "namespace": "team", "uid": "uid-1"},
}


class _Core:
    """Stands in for CoreV1Api.create_namespaced_event: keeps what was posted, and where."""

    def __init__(self) -> None:
        self.posted: list[tuple[str, dict[str, Any]]] = []
        self.threads: set[str] = set()

    def create_namespaced_event(self, namespace: str, body: dict[str, Any], **_: Any) -> Any:
        self.posted.append((namespace, body))
        self.threads.add(threading.current_thread().name)
        return SimpleNamespace(drain_conn=lambda: None, release_conn=lambda: None)


def test_events_are_posted_in_order_from_the_recorders_thread_and_flushed_on_stop() -> None:
    core = _Core()
    recorder = events.Recorder(SimpleNamespace(core=core))
    recorder.start()
    wanted = [("Normal", f"Reason{i}", f"message {i}") for i in range(120)]  # past the burst
    recorder.record(JOB, wanted[:60])
    recorder.record(JOB, wanted[60:])
    recorder.stop()
    assert [(b["type"], b["reason"], b["message"]) for _, b in core.posted] == wanted
    assert {namespace for namespace, _ in core.posted} == {"team"}
    assert core.posted[0][1]["involvedObject"]["uid"] == "uid-1"
    assert core.threads == {"events"}


def test_beyond_the_backlog_the_oldest_events_give_way(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "BACKLOG", 5)
    core = _Core()
    recorder = events.Recorder(SimpleNamespace(core=core))
    recorder.record(JOB, [("Normal", "R", f"m{i}") for i in range(8)])
    recorder.start()
    recorder.stop()
    assert [b["message"] for _, b in core.posted] == ["m3", "m4", "m5", "m6", "m7"]
