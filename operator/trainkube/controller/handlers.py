"""kopf handlers: thin. Create, update, resume and a timer all run the same reconcile.

kopf keeps its own bookkeeping in annotations (trainkube.io/...), never in status; handlers
return nothing. Events go through kopf's poster so `kubectl describe` tells the story.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
from kubernetes import client, config

from trainkube.api import GROUP, KINDS, VERSION
from trainkube.controller.reconcile import Clients, reconcile

RECONCILE_INTERVAL_SECONDS = 3.0


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.ERROR  # our own Events only, not "handler succeeded"
    settings.watching.server_timeout = 300
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    memo.clients = Clients.create(client.ApiClient())


def _reconcile(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    for kind, reason, message in reconcile(dict(body), memo.clients):
        kopf.event(body, type=kind, reason=reason, message=message)


for _kind in KINDS:
    kopf.on.create(GROUP, VERSION, _kind.plural)(_reconcile)
    kopf.on.update(GROUP, VERSION, _kind.plural, field="spec")(_reconcile)
    kopf.on.resume(GROUP, VERSION, _kind.plural)(_reconcile)
    kopf.timer(GROUP, VERSION, _kind.plural, interval=RECONCILE_INTERVAL_SECONDS, initial_delay=1)(
        _reconcile
    )
