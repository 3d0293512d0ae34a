"""Kubernetes Events for a job (what `kubectl describe` shows under Events).

Reconciles do not post them: they hand them to the `Recorder`, whose one thread posts them in
order, at most `RATE` a second (with a burst), as client-go's event recorder does for Go
controllers. An Event is the cheapest thing to be late and the first to give way: when hundreds
of jobs arrive at once, their Events wait instead of competing with the writes that start the
jobs' workers (the apiserver is the bottleneck then). At most `BACKLOG` wait; beyond that the
oldest are dropped and counted in the log. Events still waiting when the operator stops are
posted for up to `FLUSH_SECONDS`; a crash loses them (status holds the truth)."""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from kubernetes.client.exceptions import ApiException

from trainkube import timestamps
from trainkube.controller import naming
from trainkube.controller.clients import TokenBucket

log = logging.getLogger("trainkube")


def post_event(clients: Any, body: dict[str, Any], *, kind: str, reason: str, message: str) -> None:
    """Post one Event about `body`; a failure is logged, never raised."""
    meta = body["metadata"]
    now = timestamps.now()
    event = {
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": body["apiVersion"],
            "kind": body["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "type": kind,
        "reason": reason,
        "message": message[:1024],
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "source": {"component": naming.MANAGED_BY},
        "reportingComponent": naming.MANAGED_BY,
    }
    try:
        # The answer is not decoded (into a model it costs the operator more than the post), but
        # read to its end and given back: a connection whose answer is left unread never returns
        # to the pool, and each Event took one, so the requests after it opened new ones.
        answer = clients.core.create_namespaced_event(
            meta["namespace"], event, _preload_content=False
        )
        answer.drain_conn()
        answer.release_conn()
    except ApiException as error:
        log.info("event %s for %s not posted: %s", reason, meta["name"], error.reason)


RATE = 20.0  # Events a second, once the burst is spent
BURST = 50
BACKLOG = 10_000
FLUSH_SECONDS = 5.0

Posted = tuple[dict[str, Any], str, str, str]  # the job, type, reason, message


class Recorder:
    """Posts Events from one thread, in order, rate-limited (see the module docstring)."""

    def __init__(self, clients: Any, *, rate: float = RATE, burst: int = BURST) -> None:
        self.clients, self._bucket = clients, TokenBucket(rate, burst)
        self._waiting: deque[Posted] = deque()
        self._ready = threading.Condition()
        self._dropped = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def record(self, body: dict[str, Any], events: list[tuple[str, str, str]]) -> None:
        """Queue the Events (type, reason, message) about `body`."""
        if not events:
            return
        with self._ready:
            for kind, reason, message in events:
                if len(self._waiting) >= BACKLOG:
                    self._waiting.popleft()
                    self._dropped += 1
                self._waiting.append((body, kind, reason, message))
            self._ready.notify()

    def stop(self) -> None:
        """Post what waits for up to FLUSH_SECONDS, then stop."""
        with self._ready:
            self._stopping = True
            self._ready.notify()
        if self._thread.is_alive():
            self._thread.join(FLUSH_SECONDS)

    def _next(self) -> Posted | None:
        with self._ready:
            while not self._waiting and not self._stopping:
                self._ready.wait()
            if self._dropped:
                log.warning("%d Events dropped: more than %d were waiting", self._dropped, BACKLOG)
                self._dropped = 0
            return self._waiting.popleft() if self._waiting else None

    def _run(self) -> None:
        while (item := self._next()) is not None:
            if not self._stopping:  # the flush at the end is not held back
                self._bucket.take()
            body, kind, reason, message = item
            try:
                post_event(self.clients, body, kind=kind, reason=reason, message=message)
            except Exception:  # the poster must outlive any one Event
                log.exception("event %s not posted", reason)
