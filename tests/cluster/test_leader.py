"""Leader election against the real apiserver: the leader renews with one request, stops acting
the moment another replica holds the lease, and stops at its renew deadline when it cannot
reach the apiserver at all (so two replicas never act at once)."""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

from kubernetes import client

from tests.conftest import wait_for
from trainkube.controller.leader import LeaderElector


def _elector(api: Any, namespace: str, identity: str, stopped: threading.Event) -> LeaderElector:
    return LeaderElector(
        api,
        namespace=namespace,
        identity=identity,
        duration_seconds=6,
        renew_seconds=1.0,
        on_stopped=stopped.set,
    )


def test_a_leader_whose_lease_is_taken_stops_at_its_next_renewal(
    api_client: Any, namespace: str
) -> None:
    stopped = threading.Event()
    leader = _elector(api_client, namespace, "first", stopped)
    leader.start()
    try:
        wait_for(lambda: leader.is_leader, timeout_s=10)
        coordination = client.CoordinationV1Api(api_client)
        lease = coordination.read_namespaced_lease("trainkube-operator", namespace)
        lease.spec.holder_identity = "second"  # as a replica that found it expired would
        coordination.replace_namespaced_lease("trainkube-operator", namespace, lease)
        assert stopped.wait(timeout=5)
        assert not leader.is_leader
    finally:
        leader.stop()


def test_a_leader_that_cannot_reach_the_apiserver_stops_at_its_renew_deadline(
    api_client: Any, namespace: str
) -> None:
    stopped = threading.Event()
    configuration = copy.deepcopy(api_client.configuration)  # the fixture's is shared
    cut_off = client.ApiClient(configuration)
    leader = _elector(cut_off, namespace, "lonely", stopped)
    leader.start()
    try:
        wait_for(lambda: leader.is_leader, timeout_s=10)
        configuration.host = "https://127.0.0.1:1"  # nothing listens there
        cut_off.rest_client.pool_manager.clear()
        lost_at = time.monotonic()
        assert stopped.wait(timeout=leader.renew_deadline + 5)
        # It held on while the lease was still its own, and let go before it could expire.
        waited = time.monotonic() - lost_at
        assert leader.renew_deadline - 1.5 <= waited < leader.duration
        assert not leader.is_leader
    finally:
        leader.stop()
