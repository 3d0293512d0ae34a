"""Progress reports from rank 0: `progress.json` (rate-limited, rewritten atomically) and
`result.json` (the last report, written once at the end, whatever the outcome), plus one JSON
log line per report on stdout.

In a cluster the same two documents go to the job's report ConfigMap (the operator's progress
channel: only this job's pods may write it), at most once per `min_interval` for progress and
at once for events and the result; the result also goes to the container's termination message.
The ConfigMap is written from a thread of its own, each request bounded in time; a report that
cannot be sent is logged and dropped: reporting never stops or slows training.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from trainkube import timestamps
from trainkube.hangrule import allowed_seconds
from trainkube_trainer import secrets

now = timestamps.now


def _write_atomically(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(secrets.redact(json.dumps(data, sort_keys=True)))
    os.replace(temporary, path)


def log(event: str, **fields: Any) -> None:
    """One structured log line on stdout, written whole in one call: the ranks share the
    launcher's stdout, and the workers run unbuffered (`python -u`), where print's separate
    newline let another rank's line land in the middle."""
    line = json.dumps({"time": now(), "event": event, **fields}, default=str)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


TERMINATION_LOG = Path("/dev/termination-log")


SEND_SECONDS = 10.0  # the longest one report may take to reach the apiserver
RESULT_FLUSH_SECONDS = 30.0  # the longest the last report is waited for before the exit


class ConfigMapSink:
    """Writes report documents into one ConfigMap, with the pod's service account, from a
    thread of its own: `send` hands the documents over and returns at once, so a slow or
    unreachable apiserver never holds up a training step (nor the heartbeat, nor rank 0's
    lock). Of each document only the newest waits to be sent (progress.json carries the
    recent events, so a newer one says all an older one did); each request gives up after
    `send_seconds`; `flush` waits until what was handed over went out."""

    def __init__(
        self,
        name: str,
        namespace: str,
        *,
        api_client: Any = None,
        send_seconds: float = SEND_SECONDS,
    ) -> None:
        from kubernetes import client, config  # noqa: PLC0415

        if api_client is None:
            config.load_incluster_config()  # the pod's service account
        self.api = client.CoreV1Api(api_client)
        self.name, self.namespace, self.send_seconds = name, namespace, send_seconds
        self._waiting: dict[str, str] = {}
        self._sending = False
        self._changed = threading.Condition()
        threading.Thread(target=self._run, name="report-sink", daemon=True).start()

    def send(self, documents: dict[str, dict[str, Any]]) -> None:
        data = {
            key: secrets.redact(json.dumps(value, sort_keys=True))
            for key, value in documents.items()
        }
        with self._changed:
            self._waiting.update(data)
            self._changed.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until every document handed over was sent (or failed); False after `timeout`."""
        with self._changed:
            return self._changed.wait_for(
                lambda: not self._waiting and not self._sending, timeout=timeout
            )

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._waiting))
                data, self._waiting, self._sending = self._waiting, {}, True
            try:
                self.api.patch_namespaced_config_map(
                    self.name,
                    self.namespace,
                    {"data": data},
                    _request_timeout=self.send_seconds,
                )
            except Exception as error:
                log("report-not-sent", configmap=self.name, error=str(error))
            finally:
                with self._changed:
                    self._sending = False
                    self._changed.notify_all()


def sink_for(configmap: str | None, namespace: str | None) -> ConfigMapSink | None:
    """The ConfigMap sink when running in a cluster with a report ConfigMap, else None."""
    if not configmap or not namespace or "KUBERNETES_SERVICE_HOST" not in os.environ:
        return None
    try:
        return ConfigMapSink(configmap, namespace)
    except Exception as error:
        log("report-channel-unavailable", configmap=configmap, error=str(error))
        return None


class Reporter:
    """Rank 0's reports; other ranks get an instance whose calls do nothing."""

    def __init__(
        self,
        directory: Path,
        *,
        enabled: bool,
        min_interval: float,
        sink: ConfigMapSink | None = None,
        hang_timeout: int | None = None,
    ) -> None:
        self.directory = directory
        self.hang_timeout = hang_timeout  # failurePolicy.hangTimeoutSeconds (None: derived)
        self._stepped_at: float | None = None  # monotonic, of the last step
        self._stall_reported: float | None = None  # the _stepped_at a stall report went for
        self.enabled = enabled
        self.min_interval = min_interval
        self.sink = sink
        self.last = -float("inf")
        self.events: list[dict[str, Any]] = []
        self.state: dict[str, Any] = {}
        self._lock = threading.RLock()  # the heartbeat thread flushes too

    def progress(self, *, force: bool = False, **fields: Any) -> None:
        """Record `fields`; write progress.json unless one was written < min_interval ago."""
        if not self.enabled:
            return
        with self._lock:
            self.state.update(fields)
            self.state["updated"] = now()
        if force or time.monotonic() - self.last >= self.min_interval:
            self._flush()
            log("progress", **fields)

    def stepped(self, step: int, seconds: float) -> None:
        """A step finished (it took `seconds`): remembered, sent with the next report or
        heartbeat. The operator's hang detection reads `lastStepAt` and `stepSeconds`."""
        if not self.enabled:
            return
        with self._lock:
            previous = self.state.get("stepSeconds")
            mean = seconds if previous is None else 0.9 * float(previous) + 0.1 * seconds
            self.state.update(lastStep=step, lastStepAt=now(), stepSeconds=round(mean, 3))
            self._stepped_at = time.monotonic()

    def phase(self, name: str) -> None:
        """What the run does now (starting, training, validating, checkpointing, saving): the
        operator allows the slow ones more time before it calls a run hung."""
        if self.enabled:
            with self._lock:
                self.state["phase"] = name

    def _stall_due(self) -> float | None:
        """Monotonic time when the operator's hang limit (trainkube.hangrule) is passed since
        the last step, plus a second for the reports' whole-second timestamps; None before the
        first step, or once the report proving this stall went out."""
        with self._lock:
            stepped = self._stepped_at
            if stepped is None or self._stall_reported == stepped:
                return None
            return stepped + allowed_seconds(self.state, self.hang_timeout) + 1.0

    def start_heartbeat(self, seconds: float) -> threading.Event:
        """Send the report every `seconds` from a thread, until the returned event is set, and
        once more as soon as the time the operator allows without a step has passed: that
        report (its `sentAt` against `lastStepAt`) is what proves a hang to the operator."""
        stop = threading.Event()
        if not self.enabled or seconds <= 0:
            return stop

        def wait() -> float:
            due = self._stall_due()
            return (
                seconds / 2 if due is None else min(seconds / 2, max(0.0, due - time.monotonic()))
            )

        def beat() -> None:
            while not stop.wait(wait()):
                due = self._stall_due()
                stalled = due is not None and time.monotonic() >= due
                if not stalled and time.monotonic() - self.last < seconds:
                    continue  # a report went out lately: that was the heartbeat
                with self._lock:
                    self.state["heartbeat"] = now()
                    if stalled:
                        self._stall_reported = self._stepped_at
                self._flush()

        threading.Thread(target=beat, name="heartbeat", daemon=True).start()
        return stop

    def _flush(self) -> None:
        # Under the lock: the heartbeat thread and the training loop write the same files.
        with self._lock:
            self.last = time.monotonic()
            self.state["sentAt"] = now()  # the operator's proof of a stall: see hangrule
            document = {**self.state, "events": self.events[-50:]}
            _write_atomically(self.directory / "progress.json", document)
            if self.sink is not None:
                self.sink.send({"progress.json": document})

    def event(self, kind: str, **fields: Any) -> None:
        """Something the operator must not miss (checkpoint, divergence): written at once."""
        if not self.enabled:
            return
        with self._lock:
            self.events.append({"type": kind, "time": now(), **fields})
        log(kind, **fields)
        self._flush()

    def result(self, *, outcome: str, exit_code: int, **fields: Any) -> None:
        if not self.enabled:
            return
        with self._lock:
            state = dict(self.state)
            result = {"outcome": outcome, "exitCode": exit_code, "time": now(), **state, **fields}
            _write_atomically(self.directory / "result.json", result)
            self.last = time.monotonic()
            document = {**state, "events": self.events[-50:]}
            _write_atomically(self.directory / "progress.json", document)
            if self.sink is not None:
                self.sink.send({"progress.json": document, "result.json": result})
        if self.sink is not None and not self.sink.flush(RESULT_FLUSH_SECONDS):
            log("report-not-sent", configmap=self.sink.name, error="the result was still waiting")
        # The kubelet makes the file (writable by the container's user) in a cluster only.
        if TERMINATION_LOG.exists() and os.access(TERMINATION_LOG, os.W_OK):
            keys = ("outcome", "exitCode", "step", "loss", "error")
            summary = {k: result[k] for k in keys if k in result}
            if isinstance(summary.get("error"), str):
                summary["error"] = summary["error"][:2000]  # the kubelet keeps 4 KiB at most
            with contextlib.suppress(OSError):
                TERMINATION_LOG.write_text(secrets.redact(json.dumps(summary)))
        log("result", outcome=outcome, exit_code=exit_code, **fields)
        sys.stdout.flush()
