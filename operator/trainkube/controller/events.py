"""Kubernetes Events for a job (what `kubectl describe` shows under Events)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from trainkube.controller import naming

log = logging.getLogger("trainkube")


def post_event(clients: Any, body: dict[str, Any], *, kind: str, reason: str, message: str) -> None:
    """Post one Event about `body`; a failure is logged, never raised."""
    meta = body["metadata"]
    now = datetime.now(UTC)
    event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=meta["namespace"]),
        involved_object=client.V1ObjectReference(
            api_version=body["apiVersion"],
            kind=body["kind"],
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
        ),
        type=kind,
        reason=reason,
        message=message[:1024],
        first_timestamp=now,
        last_timestamp=now,
        count=1,
        source=client.V1EventSource(component=naming.MANAGED_BY),
        reporting_component=naming.MANAGED_BY,
    )
    try:
        clients.core.create_namespaced_event(meta["namespace"], event)
    except ApiException as error:
        log.info("event %s for %s not posted: %s", reason, meta["name"], error.reason)
