"""`make kind-demo` and `make kind-down` end to end (marker `kind`, deselected unless asked for:
it creates a 3-node kind cluster, loads the 5.85 GB trainer image into two nodes and runs the
examples' chain, 10-20 minutes and ~15 GB of disk). The local test cluster shares this machine:
run it under the cluster lock,

    flock /tmp/trainkube-cluster.lock .venv/bin/pytest -m kind tests/kind
"""

from __future__ import annotations

import pytest

from tests.kind import demo, lifecycle, settings
from tests.localcluster.demo import JOBS

pytestmark = pytest.mark.kind


@pytest.mark.timeout(3600)
def test_kind_demo_runs_the_chain_on_two_workers_and_down_leaves_nothing() -> None:
    chosen = settings.from_environment()
    outcome, workers = None, []
    try:
        cluster = lifecycle.up(chosen)
        workers = cluster.workers()
        outcome = demo.run(cluster)
    finally:
        left = lifecycle.down(chosen)

    assert outcome is not None
    assert outcome.phases == {name: "Succeeded" for _, name in JOBS}
    assert len(workers) == 2
    for job in ("tiny-pretrain", "tiny-lora"):  # the two 2-node jobs
        assert sorted(outcome.worker_nodes[job]) == sorted(workers), outcome.worker_nodes
    assert left == []
