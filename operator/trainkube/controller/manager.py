"""The controller: informers feed one work queue; worker threads reconcile one job at a time.

Every watch event maps to the job it concerns (a job's own event, or a child's labels) and
enqueues that job; a job's event also enqueues the jobs that build on it (`fromJob`), so a
fine-tune starts the moment its base model's job succeeds. Nothing sweeps: time-based work is a
delayed re-queue of one job, and a resync every few minutes (from the cache, no API reads) is
only a safety net. Reconciles start after every cache has its first listing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from trainkube.controller import metrics, naming
from trainkube.controller.cache import Cache
from trainkube.controller.clients import Clients
from trainkube.controller.events import Recorder
from trainkube.controller.hooks import CrashPoints
from trainkube.controller.informer import Object
from trainkube.controller.reconcile import Context, NotLeader, reconcile
from trainkube.controller.workqueue import WorkQueue

WORKERS = 4
RESYNC_SECONDS = 300.0
log = logging.getLogger("trainkube")

JobKey = tuple[str, str, str]  # kind, namespace, name


def _refs(spec: Any) -> Iterator[tuple[str, str]]:
    """Every (kind, name) a spec refers to with `fromJob`, wherever it sits."""
    if isinstance(spec, dict):
        ref = spec.get("fromJob")
        if isinstance(ref, dict) and ref.get("kind") and ref.get("name"):
            yield ref["kind"], ref["name"]
        for value in spec.values():
            yield from _refs(value)
    elif isinstance(spec, list):
        for value in spec:
            yield from _refs(value)


def job_key(obj: Object) -> JobKey:
    meta = obj["metadata"]
    return obj["kind"], meta["namespace"], meta["name"]


class Controller:
    def __init__(
        self,
        clients: Clients,
        *,
        namespaces: list[str],
        is_leader: Callable[[], bool] = lambda: True,
        workers: int = WORKERS,
    ) -> None:
        self.queue = WorkQueue()
        self.stop = threading.Event()
        self.workers = workers
        self.cache = Cache(
            clients,
            namespaces=namespaces,
            on_job=self._on_job,
            on_child=self._on_child,
            on_own_write=self._wrote,
        )
        self.ctx = Context(clients, self.cache, is_leader, CrashPoints(), Recorder(clients))
        self._lock = threading.Lock()
        self._dependents: dict[JobKey, set[JobKey]] = {}  # job -> jobs that build on it
        self._names: dict[tuple[str, str, str], str] = {}  # (ns, kind, job label) -> name
        metrics.watch_jobs(self.cache)

    # -- events -------------------------------------------------------------------------------

    def _on_job(self, event: str, old: Object | None, new: Object | None) -> None:
        obj = new or old
        assert obj is not None
        key = job_key(obj)
        kind, namespace, name = key
        before = {(kind_, namespace, n) for kind_, n in _refs((old or {}).get("spec"))}
        after = {(kind_, namespace, n) for kind_, n in _refs((new or {}).get("spec"))}
        label = (namespace, kind, naming.job_label(kind, name))
        with self._lock:
            for ref in before - after:
                self._dependents.get(ref, set()).discard(key)
            for ref in after:
                self._dependents.setdefault(ref, set()).add(key)
            if new is None:
                self._names.pop(label, None)
            else:
                self._names[label] = name
            dependents = list(self._dependents.get(key, ()))
        if new is not None:
            self.queue.add(key)
        for dependent in dependents:
            self.queue.add(dependent)

    def _wrote(self, job: Object) -> None:
        """The operator wrote `job`'s status: the jobs that build on it look again (its own
        watch event, with that version, is no news and enqueues nothing)."""
        with self._lock:
            dependents = list(self._dependents.get(job_key(job), ()))
        for dependent in dependents:
            self.queue.add(dependent)

    def _on_child(self, event: str, old: Object | None, new: Object | None) -> None:
        owner = naming.owner_key(new or old or {})
        if owner is None:
            return
        namespace, kind, _ = owner
        with self._lock:
            name = self._names.get(owner)
        if name is not None:
            self.queue.add((kind, namespace, name))

    # -- work ---------------------------------------------------------------------------------

    def reconcile_key(self, key: JobKey) -> None:
        kind, namespace, name = key
        body = self.cache.job(kind, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self.queue.forget(key)
            return
        try:
            with metrics.RECONCILE_SECONDS.labels(kind).time():
                result = reconcile(body, self.ctx)
        except NotLeader:
            return
        except Exception:  # one broken job must not stop the others: back off, try again
            metrics.RECONCILE_ERRORS.labels(kind).inc()
            log.exception("reconcile of %s %s/%s failed", kind, namespace, name)
            self.queue.add_rate_limited(key)
            return
        self.queue.forget(key)
        if result.requeue_after is not None:
            self.queue.add_after(key, result.requeue_after)

    def _work(self) -> None:
        while True:
            key = self.queue.get()
            if key is None:
                return
            try:
                self.reconcile_key(key)  # type: ignore[arg-type]
            finally:
                self.queue.done(key)

    def _resync(self) -> None:
        while not self.stop.wait(RESYNC_SECONDS):
            for job in self.cache.all_jobs():
                self.queue.add(job_key(job))

    def run(self) -> None:
        """Fill the caches, then reconcile until `shutdown`."""
        self.cache.start(self.stop)
        if not self.cache.wait_synced(self.stop):
            return
        log.info("caches synced: %d jobs", len(self.cache.all_jobs()))
        for job in self.cache.all_jobs():
            self.queue.add(job_key(job))
        threads = [
            threading.Thread(target=self._work, name=f"trainkube-worker-{i}", daemon=True)
            for i in range(self.workers)
        ]
        threads.append(threading.Thread(target=self._resync, name="trainkube-resync", daemon=True))
        if self.ctx.events is not None:
            self.ctx.events.start()
        for thread in threads:
            thread.start()

    def shutdown(self) -> None:
        self.stop.set()
        self.queue.shutdown()
        if self.ctx.events is not None:
            self.ctx.events.stop()
