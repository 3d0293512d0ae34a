"""kopf handlers: thin. Create, update and resume run the reconcile at once; a sweeper thread
runs it for every job every few seconds (level-based: whatever changed in the children, the
next sweep sees it).

Why a sweeper and not kopf timers: kopf puts a finalizer on every object with a timer, so a
job could not be deleted while the operator is down, and deletions initiated by the operator
itself (ttlSecondsAfterFinished) stalled on it. kopf's own bookkeeping stays in annotations
(trainkube.io/...), never in status; handlers return nothing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from trainkube.api import GROUP, KINDS, VERSION
from trainkube.controller import metrics
from trainkube.controller.events import post_event
from trainkube.controller.keyedlocks import KeyedLocks
from trainkube.controller.leader import LeaderElector
from trainkube.controller.reconcile import Clients, reconcile

SWEEP_INTERVAL_SECONDS = 3.0
log = logging.getLogger("trainkube")
_locks = KeyedLocks()  # one reconcile at a time per job (sweeper and kopf handlers)
_scope: dict[str, Any] = {"namespaces": [], "metrics_port": 0}


def watch_namespaces(namespaces: list[str], *, metrics_port: int = 0) -> None:
    """Limit the sweeper to these namespaces (all when empty; kopf gets the same list), and
    serve Prometheus metrics on `metrics_port` (0: none)."""
    _scope["namespaces"] = list(namespaces)
    _scope["metrics_port"] = metrics_port


def _reconcile_one(body: dict[str, Any], clients: Clients) -> None:
    elector = _scope.get("elector")
    if elector is not None and not elector.is_leader:
        return  # another replica acts; this one stands by
    timer = metrics.RECONCILE_SECONDS.labels(body["kind"]).time()
    with _locks.hold(body["metadata"]["uid"]), timer:
        try:
            events = reconcile(body, clients)
        except Exception:
            metrics.RECONCILE_ERRORS.labels(body["kind"]).inc()
            raise
        for kind, reason, message in events:
            post_event(clients, body, kind=kind, reason=reason, message=message)


def _list(clients: Clients, plural: str) -> list[dict[str, Any]]:
    namespaces = _scope["namespaces"]
    if not namespaces:
        found: Any = clients.custom.list_cluster_custom_object(GROUP, VERSION, plural)
        return list(found["items"])
    items: list[dict[str, Any]] = []
    for namespace in namespaces:
        page: Any = clients.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        items.extend(page["items"])
    return items


def _sweep(clients: Clients, stop: threading.Event) -> None:
    while not stop.wait(SWEEP_INTERVAL_SECONDS):
        started = time.monotonic()
        for kind in KINDS:
            try:
                bodies = _list(clients, kind.plural)
            except ApiException as error:
                log.warning("cannot list %s: %s", kind.plural, error.reason)
                continue
            metrics.record_jobs(kind.kind, bodies)
            for body in bodies:
                if body["metadata"].get("deletionTimestamp"):
                    continue
                try:
                    _reconcile_one(body, clients)
                except Exception:  # one broken job must not stop the others
                    name = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
                    log.exception("reconcile of %s %s failed", kind.kind, name)
        log.debug("sweep took %.2f s", time.monotonic() - started)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.enabled = False  # our own Events only (see events.post_event)
    settings.watching.server_timeout = 300
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    memo.clients = Clients.create(client.ApiClient())
    namespace = os.environ.get("POD_NAMESPACE") or (_scope["namespaces"] or ["default"])[0]
    elector = LeaderElector(memo.clients.api, namespace=namespace)
    _scope["elector"] = elector
    elector.start()
    metrics.LEADER.set_function(lambda: 1.0 if elector.is_leader else 0.0)
    memo.stop = threading.Event()
    memo.sweeper = threading.Thread(
        target=_sweep, args=(memo.clients, memo.stop), name="trainkube-sweeper", daemon=True
    )
    memo.sweeper.start()
    metrics.serve(_scope["metrics_port"])


@kopf.on.cleanup()
def shutdown(memo: kopf.Memo, **_: Any) -> None:
    memo.stop.set()
    if _scope.get("elector") is not None:
        _scope["elector"].stop()


def _reconcile(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _reconcile_one(dict(body), memo.clients)


for _kind in KINDS:
    kopf.on.create(GROUP, VERSION, _kind.plural)(_reconcile)
    kopf.on.update(GROUP, VERSION, _kind.plural, field="spec")(_reconcile)
    kopf.on.resume(GROUP, VERSION, _kind.plural)(_reconcile)
