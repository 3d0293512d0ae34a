"""Shared fixtures: the local control plane (once per session), a client, a namespace per test.

Tests under tests/unit are marked `unit` and never touch the cluster; tests under tests/cluster
are marked `cluster`. The control plane starts on first use, or is reused when one is already
running (then it is left running afterwards); one this session started is stopped at the end
unless TRAINKUBE_KEEP_CLUSTER=1.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.localcluster import shm
from tests.localcluster.cluster import LocalCluster, stop_helpers

TESTS_DIR = Path(__file__).resolve().parent


def pytest_sessionstart(session: pytest.Session) -> None:
    """Free what killed DeepSpeed workers of earlier runs left in /dev/shm (it is memory)."""
    freed = shm.remove_stale_segments()
    if freed:
        print(f"\nremoved {freed / 2**20:.0f} MiB of stale DeepSpeed shared memory from /dev/shm")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        relative = Path(str(item.fspath)).resolve().relative_to(TESTS_DIR)
        if relative.parts[0] == "unit":
            item.add_marker(pytest.mark.unit)
        elif relative.parts[0] == "cluster":
            item.add_marker(pytest.mark.cluster)
        elif relative.parts[0] == "trainer":
            item.add_marker(pytest.mark.trainer)


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster.prepare()
    started = cluster.up()
    # A reused cluster may still run the demo's operator: the tests start their own, and two
    # operators would elect one leader between them.
    stop_helpers(cluster.layout)
    yield cluster
    if started and os.environ.get("TRAINKUBE_KEEP_CLUSTER") != "1":
        cluster.down()


@pytest.fixture(scope="session")
def api_client(local_cluster: LocalCluster) -> Any:
    """A kubernetes ApiClient authenticated as the cluster admin."""
    return config.new_client_from_config(config_file=str(local_cluster.kubeconfig))


def wait_for(predicate: Any, *, timeout_s: float = 30.0, interval_s: float = 0.2) -> Any:
    """Poll `predicate` until it returns something truthy (a 404 counts as not yet); fail the
    test with what it saw."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except ApiException as error:  # not created yet
            if error.status != 404:
                raise
            last = error.reason
        else:
            if last:
                return last
        time.sleep(interval_s)
    pytest.fail(f"condition not met within {timeout_s} s (last value: {last!r})")


@pytest.fixture
def namespace(api_client: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace, deleted after the test; waits for its default ServiceAccount."""
    core = client.CoreV1Api(api_client)
    slug = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{slug}-{secrets.token_hex(3)}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))

    def default_account_exists() -> bool:
        accounts = core.list_namespaced_service_account(name).items
        return any(account.metadata.name == "default" for account in accounts)

    wait_for(default_account_exists)
    yield name
    core.delete_namespace(name)
