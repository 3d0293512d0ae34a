"""The operator's Events give their connection back to the client's pool: Events posted one
after another travel over one TLS connection, not one each (an answer left unread kept its
connection out of the pool, and every request after it had to open a new one)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from kubernetes import client, config

from tests.conftest import wait_for
from tests.localcluster.cluster import LocalCluster
from trainkube.controller.events import post_event

EVENTS = 12


def _connections_opened(api: client.ApiClient) -> int:
    pools = api.rest_client.pool_manager.pools  # urllib3's container: no iteration, only keys()
    return sum(pools[key].num_connections for key in pools.keys())  # noqa: SIM118


def test_events_posted_one_after_another_share_one_connection(
    local_cluster: LocalCluster, namespace: str
) -> None:
    api = config.new_client_from_config(config_file=str(local_cluster.kubeconfig))
    core = client.CoreV1Api(api)
    job = {
        "apiVersion": "trainkube.io/v1alpha1",
        "kind": "LLMTrainingJob",
        "metadata": {"name": "pooled", "namespace": namespace, "uid": "uid-pooled"},
    }
    for i in range(EVENTS):
        post_event(
            SimpleNamespace(core=core), job, kind="Normal", reason="Pooled", message=f"event {i}"
        )
    opened = _connections_opened(api)

    def posted() -> list[Any]:
        found = core.list_namespaced_event(namespace, field_selector="reason=Pooled").items
        return found if len(found) == EVENTS else []

    assert len(wait_for(posted)) == EVENTS
    assert opened == 1, f"{EVENTS} Events opened {opened} connections"
