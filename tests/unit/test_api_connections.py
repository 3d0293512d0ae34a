"""The operator's API client keeps a connection for every watch its cache holds open and for
every thread that sends, so no request has to open (and then drop) a TLS connection of its own."""

from __future__ import annotations

from typing import Any, cast

import pytest
from kubernetes import client

from trainkube.controller import cache
from trainkube.controller.clients import Clients, TimedApiClient
from trainkube.controller.manager import WORKERS


def _ignore(*_: object) -> None:
    return None


@pytest.mark.parametrize("namespaces", [[], ["team-a"], ["team-a", "team-b", "team-c"]])
def test_the_client_keeps_a_connection_per_watch_and_per_sending_thread(
    namespaces: list[str],
) -> None:
    watches = cache.watches(namespaces)
    api = TimedApiClient()
    clients = Clients(  # no dynamic client: it would read the API's discovery when made
        api=api,
        dynamic=cast(Any, None),
        core=client.CoreV1Api(api),
        batch=client.BatchV1Api(api),
        custom=client.CustomObjectsApi(api),
        images={},
    )
    built = cache.Cache(clients, namespaces=namespaces, on_job=_ignore, on_child=_ignore)
    assert watches == len(list(built.informers()))  # one watch per informer, none started here
    kept = TimedApiClient(watches=watches).configuration.connection_pool_maxsize
    senders = WORKERS + 1  # the workers and the Event thread
    assert kept >= watches + senders
