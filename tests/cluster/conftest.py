"""Fixtures for tests against the local control plane: the CRDs, and a running operator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import wait_for
from tests.localcluster.cluster import LocalCluster
from tests.localcluster.demo import load_images
from tests.ports import free_port
from trainkube.api import KINDS
from trainkube.controller.clients import DEFAULT_IMAGES

REPO = Path(__file__).resolve().parents[2]


LOG_TAIL_LINES = 40


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed cluster test shows the tail of the operator's log: in CI its output is all
    there is to read."""
    report = yield
    if report.failed and call.when == "call":
        for name in ("operator",):
            process = getattr(item, "funcargs", {}).get(name)
            if isinstance(process, OperatorProcess) and process.log.exists():
                lines = process.log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
                report.sections.append((f"{name} log, last lines", "\n".join(lines)))
    return report


@pytest.fixture(scope="session")
def crds(local_cluster: LocalCluster) -> LocalCluster:
    """The cluster with trainkube's CRDs installed and established."""
    local_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    local_cluster.wait_condition("Established", *[f"crd/{kind.crd_name}" for kind in KINDS])
    return local_cluster


def apply_manifests(cluster: LocalCluster, namespace: str, *manifests: dict[str, Any]) -> str:
    """`kubectl apply -n namespace` of one manifest, or of several as a List; its output."""
    body = (
        manifests[0]
        if len(manifests) == 1
        else {"apiVersion": "v1", "kind": "List", "items": list(manifests)}
    )
    return cluster.kubectl("apply", "-n", namespace, "-f", "-", input_text=yaml.safe_dump(body))


def described(cluster: LocalCluster, kind: str, name: str, namespace: str, *shown: str) -> str:
    """`kubectl describe` of a job once it shows every text in `shown`: the operator posts its
    Events from a thread of their own, a moment after the status they go with."""

    def showing() -> str | None:
        text = cluster.kubectl("describe", kind, name, "-n", namespace)
        return text if all(s in text for s in shown) else None

    return str(wait_for(showing, timeout_s=30, interval_s=0.5))


class OperatorProcess:
    """`trainkube operator` as a real process against the local cluster."""

    def __init__(self, cluster: LocalCluster, log: Path) -> None:
        self.cluster, self.log = cluster, log
        self.process: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0

    def _spawn(self, command: list[str]) -> subprocess.Popen[bytes]:
        """Run `command` against the local cluster in its own session, logging to `self.log`."""
        # Test hooks on: the recovery tests inject faults with the trainkube.io/fault annotation.
        env = {
            **os.environ,
            "KUBECONFIG": str(self.cluster.kubeconfig),
            "TRAINKUBE_ENABLE_TEST_HOOKS": "1",
        }
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self.process

    def start(self) -> None:
        port = free_port()
        self.metrics_port = free_port()
        process = self._spawn(
            [
                str(Path(sys.executable).parent / "trainkube"),
                "operator",
                f"--liveness=http://127.0.0.1:{port}/healthz",
                f"--metrics-port={self.metrics_port}",
            ]
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    return
            except OSError:
                if process.poll() is not None:
                    break
                time.sleep(0.3)
        raise RuntimeError(f"the operator did not become healthy; see {self.log}")

    def kill(self) -> None:
        """Stop it the hard way, as a crashed pod would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="session")
def trainer_image(local_cluster: LocalCluster) -> str:
    """The CPU trainer image, built here (images/build.sh, cached) and loaded into the real CPU
    node, whose pods then run it as the operator's default CPU image."""
    load_images(local_cluster, "trainer-cpu")
    return DEFAULT_IMAGES["cpu"]


@pytest.fixture(scope="session")
def operator(
    crds: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(crds, tmp_path_factory.mktemp("operator") / "operator.log")
    process.start()
    yield process
    process.stop()
