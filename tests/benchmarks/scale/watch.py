"""Watching the local apiserver cheaply: a raw-JSON HTTPS client, collections kept by watches
(when each object was first seen and reached each phase), and what the benchmark reads off them."""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import urllib3

from tests.localcluster import components

GROUP, VERSION, PLURAL = "trainkube.io", "v1alpha1", "llmtrainingjobs"


def now() -> float:
    return time.monotonic()


class Api:
    """A small HTTPS client for the local apiserver with one client certificate: raw JSON, so
    that watching thousands of objects costs this process little CPU."""

    def __init__(self, layout: components.Layout, cert: Path, key: Path) -> None:
        context = ssl.create_default_context(cafile=str(layout.pki_dir / "ca.crt"))
        context.load_cert_chain(str(cert), str(key))
        self.base = layout.server_url
        self.http = urllib3.PoolManager(ssl_context=context, maxsize=8)

    def request(
        self, method: str, path: str, body: Any = None, *, content_type: str = "application/json"
    ) -> Any:
        reply = self.http.request(
            method,
            self.base + path,
            body=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": content_type},
            timeout=60,
        )
        if reply.status >= 300:
            raise RuntimeError(f"{method} {path}: {reply.status} {reply.data[:300]!r}")
        return json.loads(reply.data) if reply.data[:1] == b"{" else reply.data.decode()

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def exists(self, path: str) -> bool:
        reply = self.http.request("GET", self.base + path, timeout=60)
        return bool(reply.status == 200)

    def merge_patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def watch(self, path: str, resource_version: str | None) -> urllib3.BaseHTTPResponse:
        """An open watch: the call returns once the apiserver has sent its headers, that is
        once the watch is established."""
        fields = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": "3600"}
        if resource_version:
            fields["resourceVersion"] = resource_version
        reply = self.http.request(
            "GET",
            self.base + path,
            fields=fields,
            preload_content=False,
            timeout=urllib3.Timeout(connect=10, read=3700),
        )
        if reply.status != 200:
            raise RuntimeError(f"watch {path}: {reply.status} {reply.read()[:300]!r}")
        return reply


def _phase(obj: dict[str, Any]) -> str:
    status = obj.get("status") or {}
    if status.get("phase"):
        return str(status["phase"])
    for condition in status.get("conditions") or []:
        kind = condition.get("type")
        if kind in ("Succeeded", "Complete", "Failed") and condition.get("status") == "True":
            return "Failed" if kind == "Failed" else "Succeeded"  # a batch Job says Complete
    return ""


class Collection(threading.Thread):
    """Every object of one namespaced collection, kept by a watch: when each was first seen,
    when it first reached each phase, and how many events arrived."""

    def __init__(self, api: Api, path: str) -> None:
        super().__init__(daemon=True)
        self.api, self.path = api, path
        self.first_seen: dict[str, float] = {}
        self.reached: dict[str, dict[str, float]] = {}
        self.phase: dict[str, str] = {}
        self.owner: dict[str, str] = {}
        self.events = 0
        self.last_event = now()
        self.changed = threading.Condition()
        self._stopped = threading.Event()
        self._version: str | None = None
        self._reply = api.watch(path, None)  # established before anything is applied
        self.start()

    def run(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a dropped connection: reconnect below
                for event in _events(self._reply):
                    self._apply(event)
            if self._stopped.is_set():
                return
            self._reply = self.api.watch(self.path, self._version)

    def _apply(self, event: dict[str, Any]) -> None:
        stamp = now()
        kind, obj = event.get("type"), event.get("object") or {}
        meta = obj.get("metadata") or {}
        if kind == "ERROR":  # e.g. 410 Gone: start over from the current state
            self._version = None
            raise RuntimeError(str(obj))
        self._version = meta.get("resourceVersion") or self._version
        if kind == "BOOKMARK":
            return
        name = meta["name"]
        with self.changed:
            self.events += 1
            self.last_event = stamp
            if kind == "DELETED":
                self.phase.pop(name, None)
            else:
                self.first_seen.setdefault(name, stamp)
                phase = _phase(obj)
                self.phase[name] = phase
                self.reached.setdefault(name, {}).setdefault(phase, stamp)
                owners = [o for o in meta.get("ownerReferences") or [] if o.get("controller")]
                if owners:
                    self.owner[name] = owners[0]["name"]
            self.changed.notify_all()

    def wait(self, check: Callable[[Collection], bool], timeout_s: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: check(self), timeout=max(timeout_s, 0))

    def count_in(self, phase: str) -> int:
        with self.changed:
            return sum(1 for p in self.phase.values() if p == phase)

    def nth_seen(self, n: int) -> float | None:
        with self.changed:
            times = sorted(self.first_seen.values())
        return times[n - 1] if len(times) >= n else None

    def nth_reached(self, phase: str, n: int) -> float | None:
        with self.changed:
            times = sorted(t[phase] for t in self.reached.values() if phase in t)
        return times[n - 1] if len(times) >= n else None

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(Exception):
            self._reply.shutdown()
            self._reply.release_conn()
        self.join(timeout=5)


def _events(reply: urllib3.BaseHTTPResponse) -> Iterator[dict[str, Any]]:
    buffer = b""
    for chunk in reply.stream(1 << 16):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield json.loads(line)


def seconds_after(at: float | None, started: float) -> float | None:
    return None if at is None else round(at - started, 2)


TIMELINE_STEP = 5.0  # seconds between the points of a creation timeline


def timeline(collection: Collection, started: float) -> list[int]:
    """How many objects of `collection` had been seen 5, 10, 15 ... s after `started`, to the
    last one: where in the run the creations lagged."""
    with collection.changed:
        seen = sorted(at - started for at in collection.first_seen.values())
    if not seen:
        return []
    points = int(seen[-1] // TIMELINE_STEP) + 1
    return [sum(1 for at in seen if at <= (k + 1) * TIMELINE_STEP) for k in range(points)]


def created_and_running(
    pods: Collection, jobs: int, started: float, deadline: float
) -> dict[str, Any]:
    pods.wait(lambda c: len(c.first_seen) >= jobs, deadline - now())
    created = pods.nth_seen(jobs)
    pods.wait(lambda c: c.count_in("Running") >= jobs, deadline - now())
    return {
        "allWorkersCreatedSeconds": seconds_after(created, started),
        "allWorkersRunningSeconds": seconds_after(pods.nth_reached("Running", jobs), started),
        "workersCreated": len(pods.first_seen),
        "capped": created is None,
    }


class Watched:
    """The watches on one operator namespace: worker pods, batch Jobs, LLMTrainingJobs."""

    def __init__(self, api: Api, namespace: str) -> None:
        self.pods = Collection(api, f"/api/v1/namespaces/{namespace}/pods")
        self.batch = Collection(api, f"/apis/batch/v1/namespaces/{namespace}/jobs")
        self.jobs = Collection(api, f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}")
        self.all = [self.pods, self.batch, self.jobs]
