"""One attempt at a time: over several restarts, no pod of the next attempt exists before every
pod of the previous one is gone (seen by a watch of the job's pods, on KWOK GPU nodes)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from kubernetes import client, watch

from tests.cluster.test_operator import _apply, _finish, _training_job, _wait_condition
from tests.conftest import wait_for
from tests.localcluster.cluster import LocalCluster


class PodTimeline:
    """When each pod of a job was first seen and when it was gone, by attempt."""

    def __init__(self, api: Any, namespace: str, job: str) -> None:
        self.api, self.namespace, self.job = api, namespace, job
        self.created: dict[str, tuple[int, float]] = {}
        self.deleted: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        core = client.CoreV1Api(self.api)
        selector = f"trainkube.io/job={self.job}"
        while not self.stop.is_set():
            stream = watch.Watch()
            for event in stream.stream(
                core.list_namespaced_pod, self.namespace, label_selector=selector, timeout_seconds=5
            ):
                pod, now = event["object"], time.monotonic()
                attempt = int(pod.metadata.labels.get("trainkube.io/attempt", "0"))
                self.created.setdefault(pod.metadata.name, (attempt, now))
                if event["type"] == "DELETED":
                    self.deleted[pod.metadata.name] = now
                if self.stop.is_set():
                    stream.stop()

    def pods(self, attempt: int) -> list[str]:
        return [name for name, (a, _) in self.created.items() if a == attempt]


@pytest.mark.usefixtures("operator")
def test_the_next_attempt_has_no_pod_until_every_pod_of_the_last_one_is_gone(
    api_client: Any, crds: LocalCluster, namespace: str
) -> None:
    timeline = PodTimeline(api_client, namespace, "serial")
    timeline.thread.start()
    try:
        policy = {"maxRestarts": 3, "backoffSeconds": 0}
        _apply(crds, namespace, _training_job("serial", nodes_=2, gpus=1, failurePolicy=policy))
        core = client.CoreV1Api(api_client)
        for attempt in (1, 2, 3):
            _wait_condition(api_client, namespace, "serial", "Running", timeout_s=60)
            pods = wait_for(
                lambda a=attempt: [
                    p
                    for p in core.list_namespaced_pod(
                        namespace,
                        label_selector=f"trainkube.io/job=serial,trainkube.io/attempt={a}",
                    ).items
                    if p.status.phase == "Running"
                ],
                timeout_s=60,
            )
            _finish(api_client, namespace, pods[0], 1)  # one worker fails: the gang restarts
            wait_for(lambda a=attempt: timeline.pods(a + 1), timeout_s=60)
    finally:
        timeline.stop.set()
        timeline.thread.join(timeout=10)
    for attempt in (1, 2, 3):
        previous, following = timeline.pods(attempt), timeline.pods(attempt + 1)
        assert len(previous) == 2, (attempt, previous)
        assert following, attempt
        gone = max(timeline.deleted[name] for name in previous)
        first_next = min(timeline.created[name][1] for name in following)
        assert first_next > gone, (
            f"attempt {attempt + 1} had a pod before attempt {attempt} was gone"
        )
