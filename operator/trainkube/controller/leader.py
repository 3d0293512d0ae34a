"""Leader election on a coordination.k8s.io Lease, so that two operator replicas never act at
once: only the holder reconciles; the others stand by and take over when the lease expires.

The lease is renewed every `renew_seconds`; a holder that fails to renew for `duration_seconds`
loses it, and another replica acquires it (optimistic concurrency on the resourceVersion). The
holder stops acting earlier, the moment its last successful renewal is older than
`renew_deadline` (shorter than the lease, as in client-go), so two replicas never act at once
even when renewals hang. `on_started` runs when this replica becomes the leader, `on_stopped`
when it stops being it; a standby reads nothing but the Lease.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("trainkube")


def _now() -> datetime:
    return datetime.now(UTC)


class LeaderElector:
    """Holds (or waits for) one Lease; `is_leader` says whether this process may act."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        name: str = "trainkube-operator",
        duration_seconds: int = 15,
        renew_seconds: float = 3.0,
        identity: str | None = None,
        on_started: Callable[[], None] | None = None,
        on_stopped: Callable[[], None] | None = None,
    ) -> None:
        self.coordination = client.CoordinationV1Api(api)
        self.namespace, self.name = namespace, name
        self.duration, self.renew = duration_seconds, renew_seconds
        self.identity = identity or f"{socket.gethostname()}-{os.getpid()}"
        self.renew_deadline = max(duration_seconds - 2 * renew_seconds, renew_seconds)
        self.on_started, self.on_stopped = on_started, on_stopped
        self._leader = threading.Event()
        self._stop = threading.Event()
        self._renewed = 0.0  # time.monotonic() of the last successful renewal
        self._held: Any = None  # the Lease as this replica last wrote it, while it holds it

    @property
    def is_leader(self) -> bool:
        """Whether this replica may act now: it holds the lease and renewed it recently."""
        return self._leader.is_set() and time.monotonic() - self._renewed < self.renew_deadline

    def _spec(self, *, transitions: int, acquired: datetime | None) -> Any:
        now = _now()
        return client.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=self.duration,
            acquire_time=acquired or now,
            renew_time=now,
            lease_transitions=transitions,
        )

    def _renew_held(self) -> bool:
        """Renew the lease as this replica last wrote it: one request, no read first. False
        when it changed meanwhile (then it is read again)."""
        held, self._held = self._held, None
        if held is None or held.spec is None:
            return False
        held.spec.renew_time = _now()
        try:
            self._held = self.coordination.replace_namespaced_lease(
                self.name, self.namespace, held, _request_timeout=self.renew
            )
        except ApiException as conflict:
            if conflict.status == 409:
                return False
            raise
        return True

    def try_acquire_or_renew(self) -> bool:
        """One round: renew the lease we hold, take a free or expired one, or stand by."""
        if self._renew_held():
            return True
        try:
            lease = self.coordination.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self.renew
            )
        except ApiException as error:
            if error.status != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=self._spec(transitions=0, acquired=None),
            )
            try:
                self._held = self.coordination.create_namespaced_lease(
                    self.namespace, body, _request_timeout=self.renew
                )
                return True
            except ApiException as conflict:
                if conflict.status == 409:
                    return False
                raise
        spec = lease.spec or client.V1LeaseSpec()
        mine = spec.holder_identity == self.identity
        renewed = spec.renew_time or spec.acquire_time
        expired = (
            renewed is None
            or renewed + timedelta(seconds=spec.lease_duration_seconds or self.duration) < _now()
        )
        if not mine and not expired:
            return False
        transitions = (spec.lease_transitions or 0) + (0 if mine else 1)
        lease.spec = self._spec(
            transitions=transitions, acquired=spec.acquire_time if mine else None
        )
        try:
            self._held = self.coordination.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=self.renew
            )
        except ApiException as conflict:
            if conflict.status == 409:  # someone else renewed or took it first
                return False
            raise
        return True

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                leading = self.try_acquire_or_renew()
                taken = not leading  # another replica holds it
            except Exception as error:  # the apiserver did not answer: keep it until the deadline
                log.warning("leader election: %s", error)
                leading = taken = False
            if leading:
                self._renewed = time.monotonic()
                if not self._leader.is_set():
                    log.warning("this replica (%s) is now the leader", self.identity)
                    self._leader.set()
                    if self.on_started:
                        self.on_started()
            elif self._leader.is_set() and (taken or not self.is_leader):
                log.warning("this replica (%s) lost the lease", self.identity)
                self._leader.clear()
                if self.on_stopped:
                    self.on_stopped()
            self._stop.wait(self.renew)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="trainkube-leader", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """Stop electing and hand the lease back, so a standby takes over at once."""
        self._stop.set()
        if not self.is_leader:
            return
        self._leader.clear()
        try:
            lease = self.coordination.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self.renew
            )
            if lease.spec and lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                lease.spec.renew_time = _now() - timedelta(seconds=self.duration + 1)
                self.coordination.replace_namespaced_lease(
                    self.name, self.namespace, lease, _request_timeout=self.renew
                )
        except ApiException as error:
            log.warning("could not release the lease: %s", error.reason)
