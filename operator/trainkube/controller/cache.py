"""The operator's picture of the cluster: one informer per kind of object it reads (the three
job kinds, and the batch Jobs, Pods and report ConfigMaps it owns, selected by label), in every
namespace it watches. Children are indexed by the job that owns them (namespace, kind, job
label), so a reconcile finds them without a scan.

Two more informers hold the only Warning events that say why workers do not exist or cannot
start where no pod status does: the Job controller's `FailedCreate` (a pod the namespace's Pod
Security level, a quota or a LimitRange rejects) and the kubelet's `FailedMount` (a Secret or
key that is missing). They are selected by reason and kind on the server, indexed by the object
they are about, and each one wakes the job that owns that object."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from trainkube.api import GROUP, KINDS, VERSION
from trainkube.controller import naming
from trainkube.controller.clients import Clients
from trainkube.controller.informer import Handler, Informer, Object, Source

WORKERS_SELECTOR = f"{naming.MANAGED_BY_LABEL}={naming.MANAGED_BY},{naming.COMPONENT_LABEL}=worker"
REPORTS_SELECTOR = f"{naming.REPORT_LABEL}=true"
ALL = ""  # the informer of a cluster-wide watch
# (reason, kind of the object it is about) of the Warning events the operator reads.
WARNINGS = (("FailedCreate", "Job"), ("FailedMount", "Pod"))


def watches(namespaces: list[str]) -> int:
    """How many watches a Cache over `namespaces` holds open: one per informer."""
    per_scope = len(KINDS) + 3 + len(WARNINGS)  # the jobs; batch Jobs, pods, reports; Events
    return per_scope * max(1, len(namespaces))


def _bound(cluster_wide: Callable[..., Any], namespaced: Callable[..., Any], namespace: str) -> Any:
    return cluster_wide if namespace == ALL else functools.partial(namespaced, namespace)


class Cache:
    def __init__(
        self,
        clients: Clients,
        *,
        namespaces: list[str],
        on_job: Handler,
        on_child: Handler,
        on_own_write: Callable[[Object], None] | None = None,
    ) -> None:
        scopes = namespaces or [ALL]
        self.on_own_write = on_own_write
        self._on_child = on_child
        core, batch, custom = clients.core, clients.batch, clients.custom
        owner = naming.owner_key
        self.jobs: dict[str, dict[str, Informer]] = {}
        for kind in KINDS:
            cluster = functools.partial(
                custom.list_cluster_custom_object, GROUP, VERSION, kind.plural
            )
            namespaced = functools.partial(_namespaced_custom, custom, kind.plural)
            self.jobs[kind.kind] = {
                ns: Informer(
                    Source(_bound(cluster, namespaced, ns), f"{GROUP}/{VERSION}", kind.kind),
                    on_job,
                )
                for ns in scopes
            }

        def children(
            cluster: Callable[..., Any],
            namespaced: Callable[..., Any],
            api_version: str,
            kind: str,
            selector: str,
        ) -> dict[str, Informer]:
            return {
                ns: Informer(
                    Source(_bound(cluster, namespaced, ns), api_version, kind, selector),
                    on_child,
                    index=owner,
                )
                for ns in scopes
            }

        self._batch_jobs = children(
            batch.list_job_for_all_namespaces,
            batch.list_namespaced_job,
            "batch/v1",
            "Job",
            WORKERS_SELECTOR,
        )
        self._pods = children(
            core.list_pod_for_all_namespaces,
            core.list_namespaced_pod,
            "v1",
            "Pod",
            WORKERS_SELECTOR,
        )
        self._reports = children(
            core.list_config_map_for_all_namespaces,
            core.list_namespaced_config_map,
            "v1",
            "ConfigMap",
            REPORTS_SELECTOR,
        )
        self._warnings = [
            {
                ns: Informer(
                    Source(
                        _bound(core.list_event_for_all_namespaces, core.list_namespaced_event, ns),
                        "v1",
                        "Event",
                        field_selector=f"type=Warning,reason={reason},involvedObject.kind={kind}",
                    ),
                    self._on_warning,
                    index=_about,
                )
                for ns in scopes
            }
            for reason, kind in WARNINGS
        ]

    def informers(self) -> Iterator[Informer]:
        groups = (*self.jobs.values(), self._batch_jobs, self._pods, self._reports)
        for group in (*groups, *self._warnings):
            yield from group.values()

    def start(self, stop: threading.Event) -> None:
        for informer in self.informers():
            informer.start(stop)

    def wait_synced(self, stop: threading.Event, timeout: float | None = None) -> bool:
        """Block until every informer has its first listing (or `stop`, or `timeout`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for informer in self.informers():
            while not informer.synced.wait(0.2):
                if stop.is_set() or (deadline is not None and time.monotonic() > deadline):
                    return False
        return True

    @staticmethod
    def _in(group: dict[str, Informer], namespace: str) -> Informer | None:
        return group.get(namespace) or group.get(ALL)

    # -- jobs ---------------------------------------------------------------------------------

    def job(self, kind: str, namespace: str, name: str) -> Object | None:
        informer = self._in(self.jobs[kind], namespace)
        return informer.get(namespace, name) if informer else None

    def all_jobs(self) -> list[Object]:
        return [job for group in self.jobs.values() for i in group.values() for job in i.items()]

    def put_job(self, body: Object) -> None:
        """Take a job the operator just wrote (its watch event will not be news); whoever
        builds on it is told."""
        informer = self._in(self.jobs[body["kind"]], body["metadata"]["namespace"])
        if informer is not None:
            informer.put(body)
        if self.on_own_write is not None:
            self.on_own_write(body)

    # -- children -----------------------------------------------------------------------------

    def _owned(
        self, group: dict[str, Informer], namespace: str, kind: str, name: str
    ) -> list[Object]:
        informer = self._in(group, namespace)
        if informer is None:
            return []
        return informer.by_index((namespace, kind, naming.job_label(kind, name)))

    def attempt_jobs(self, namespace: str, kind: str, name: str) -> dict[int, Object]:
        """The job's attempt batch Jobs by attempt number."""
        return {
            attempt_of(job): job
            for job in self._owned(self._batch_jobs, namespace, kind, name)
            if attempt_of(job)
        }

    def pods(self, namespace: str, kind: str, name: str) -> list[Object]:
        return self._owned(self._pods, namespace, kind, name)

    def report(self, namespace: str, kind: str, name: str) -> Object | None:
        found = self._owned(self._reports, namespace, kind, name)
        return found[0] if found else None

    def warnings(self, child: Object) -> list[Object]:
        """The Warning events the cache holds about `child` (this very object: same uid)."""
        meta = child["metadata"]
        key = (meta.get("namespace") or "", child.get("kind", ""), meta["name"])
        found = []
        for group in self._warnings:
            informer = self._in(group, key[0])
            if informer is not None:
                found += [
                    event
                    for event in informer.by_index(key)
                    if (event.get("involvedObject") or {}).get("uid") == meta.get("uid")
                ]
        return found

    def _on_warning(self, event: str, old: Object | None, new: Object | None) -> None:
        """A Warning event about a batch Job or Pod: that child's owner looks again."""
        about = _about(new or old or {})
        if about is None or event == "DELETED":
            return
        namespace, kind, name = about
        group = self._batch_jobs if kind == "Job" else self._pods
        informer = self._in(group, namespace)
        child = informer.get(namespace, name) if informer else None
        if child is not None:
            self._on_child(event, None, child)

    def put_batch_job(self, job: Object) -> None:
        informer = self._in(self._batch_jobs, job["metadata"]["namespace"])
        if informer is not None:
            informer.put(job)


def attempt_of(obj: Object) -> int:
    """The attempt number a child is labelled with (0 when none)."""
    text = ((obj.get("metadata") or {}).get("labels") or {}).get(naming.ATTEMPT_LABEL, "0")
    return int(text) if text.isdigit() else 0


def _about(event: Object) -> tuple[str, str, str] | None:
    """(namespace, kind, name) of the object an Event is about."""
    involved = event.get("involvedObject") or {}
    if not involved.get("name"):
        return None
    return involved.get("namespace") or "", involved.get("kind") or "", involved["name"]


def _namespaced_custom(custom: Any, plural: str, namespace: str, **kwargs: Any) -> Any:
    return custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural, **kwargs)
