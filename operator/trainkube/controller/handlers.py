"""kopf runs the operator process (start-up, clean shutdown, the liveness endpoint); the work
is done by the controller (`manager.Controller`): informers, one work queue, worker threads.

Leader election comes first: a replica watches nothing and reads nothing but its Lease until it
leads. When it stops leading, it stops acting at once (every write checks the lease) and the
process ends, as controller-runtime's do; its Deployment starts it again as a standby. kopf
writes nothing into the jobs (no finalizers, no annotations): deleting a job never waits for
the operator.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import kopf
from kubernetes import config

from trainkube.controller import metrics
from trainkube.controller.cache import watches
from trainkube.controller.clients import Clients, TimedApiClient, TokenBucket
from trainkube.controller.leader import LeaderElector
from trainkube.controller.manager import Controller

log = logging.getLogger("trainkube")
_scope: dict[str, Any] = {
    "namespaces": [],
    "metrics_port": 0,
    "api_qps": 0.0,
    "api_burst": 1,
    "lost": threading.Event(),
}


def configure_scope(
    namespaces: list[str],
    *,
    metrics_port: int = 0,
    api_qps: float = 0.0,
    api_burst: int = 1,
) -> threading.Event:
    """Watch only these namespaces (all when empty), serve Prometheus metrics on
    `metrics_port` (0: none), send the apiserver at most `api_qps` requests a second after a
    burst of `api_burst` (0: no limit; the Lease is renewed outside the limit). The returned
    flag is set when leadership is lost: kopf stops."""
    _scope["namespaces"] = list(namespaces)
    _scope["metrics_port"] = metrics_port
    _scope["api_qps"], _scope["api_burst"] = api_qps, api_burst
    lost: threading.Event = _scope["lost"]
    return lost


@kopf.on.startup()
def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.enabled = False  # our own Events only (see events.post_event)
    settings.scanning.disabled = True  # kopf watches nothing: no CRD or namespace scans
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    qps, burst = _scope["api_qps"], _scope["api_burst"]
    limit = TokenBucket(qps, burst) if qps > 0 else None
    clients = Clients.create(TimedApiClient(limit, watches=watches(_scope["namespaces"])))
    namespace = os.environ.get("POD_NAMESPACE") or (_scope["namespaces"] or ["default"])[0]
    # Its own client: a renewal never waits behind the controller's requests.
    elector = LeaderElector(TimedApiClient(), namespace=namespace)
    controller = Controller(
        clients, namespaces=_scope["namespaces"], is_leader=lambda: elector.is_leader
    )

    def started() -> None:
        threading.Thread(target=controller.run, name="trainkube-controller", daemon=True).start()

    def stopped() -> None:
        log.error("leadership lost: stopping; a restart makes this replica a standby")
        controller.shutdown()
        _scope["lost"].set()

    elector.on_started, elector.on_stopped = started, stopped
    memo.elector, memo.controller = elector, controller
    metrics.LEADER.set_function(lambda: 1.0 if elector.is_leader else 0.0)
    metrics.serve(_scope["metrics_port"])
    elector.start()


@kopf.on.cleanup()
def stop(memo: kopf.Memo, **_: Any) -> None:
    memo.controller.shutdown()
    memo.elector.stop()
