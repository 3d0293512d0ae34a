"""Bring the local control plane up, check it, and bring it down leaving no process behind.

Every process runs in its own session (process group) with its pid recorded under the state
directory, so `down` can stop it even from another shell, and `up` can tell a running cluster
(reuse it) from a stale one (clean up, start fresh).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.localcluster import components, nodes, pki, shm

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
KWOK_CONFIG = HERE / "kwok-stages.yaml"


class ClusterError(RuntimeError):
    """The local cluster could not be started or checked; the message says where to look."""


def default_layout() -> components.Layout:
    """The layout of this checkout's cluster; TRAINKUBE_LOCALCLUSTER_DIR moves its state."""
    state = os.environ.get("TRAINKUBE_LOCALCLUSTER_DIR", str(REPO_ROOT / ".localcluster"))
    return components.Layout(state_dir=Path(state).resolve())


def build_binaries() -> Path:
    """Build (or find in the cache) the pinned binaries; returns their directory."""
    result = subprocess.run(
        ["bash", str(HERE / "build-bins.sh")],
        stdout=subprocess.PIPE,
        stderr=sys.stderr,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ClusterError("building the control-plane binaries failed (see the Go output above)")
    return Path(result.stdout.strip().splitlines()[-1])


def _pid_file(layout: components.Layout, name: str) -> Path:
    return layout.pids_dir / f"{name}.pid"


def running_pid(layout: components.Layout, name: str) -> int | None:
    """The pid of component `name` if its recorded process is alive and still that binary."""
    try:
        pid = int(_pid_file(layout, name).read_text())
    except (OSError, ValueError):
        return None
    if not _alive(pid):
        return None
    try:
        # Right after exec the command line can read empty for a moment: fall back to the image.
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:2]
        names = {Path(arg).name for arg in argv if arg} or {
            Path(os.readlink(f"/proc/{pid}/exe")).name
        }
    except (OSError, UnicodeDecodeError):
        return None
    # A binary is argv[0]; a Python console script is argv[1] after its interpreter.
    return pid if name in names else None


def _tls_context(layout: components.Layout, *, client_cert: bool) -> ssl.SSLContext:
    if not client_cert:
        # Controller-manager and scheduler serve /healthz with self-signed certificates.
        return ssl._create_unverified_context()
    context = ssl.create_default_context(cafile=str(layout.pki_dir / "ca.crt"))
    context.load_cert_chain(str(layout.pki_dir / "admin.crt"), str(layout.pki_dir / "admin.key"))
    return context


def is_healthy(layout: components.Layout, component: components.Component) -> bool:
    """Whether `component` answers its health endpoint with 200 (and its process lives)."""
    if running_pid(layout, component.name) is None:
        return False
    if component.health_url is None:
        return True
    context = None
    if component.health_url.startswith("https"):
        context = _tls_context(layout, client_cert=component.health_needs_client_cert)
    try:
        with urllib.request.urlopen(component.health_url, timeout=3, context=context) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class LocalCluster:
    """One local control plane: etcd, kube-apiserver, controller-manager, scheduler, KWOK."""

    layout: components.Layout
    bin_dir: Path

    @classmethod
    def prepare(cls, layout: components.Layout | None = None) -> LocalCluster:
        """Build or find the binaries; start nothing."""
        return cls(layout=layout or default_layout(), bin_dir=build_binaries())

    @property
    def kubeconfig(self) -> Path:
        return self.layout.kubeconfig("admin")

    def processes(self) -> list[components.Component]:
        return components.control_plane(self.layout, self.bin_dir, KWOK_CONFIG)

    def is_up(self) -> bool:
        return all(is_healthy(self.layout, c) for c in self.processes())

    def kubectl(self, *args: str, input_text: str | None = None) -> str:
        """Run the pinned kubectl against this cluster; raises with its stderr on failure."""
        result = subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input_text,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def wait_condition(
        self, condition: str, *objects: str, namespace: str = "", timeout_s: float = 60.0
    ) -> None:
        """Wait until each of `objects` ("kind/name") exists and has `condition` True.

        `kubectl wait --for=condition=...` fails at once, instead of waiting, while an object
        has no status.conditions yet (a CRD or node just created), so this polls instead.
        """
        scope = ["-n", namespace] if namespace else []
        deadline = time.monotonic() + timeout_s
        waiting = list(objects)
        while True:
            seen = {}
            for name in waiting:
                try:
                    found = json.loads(self.kubectl("get", name, *scope, "-o", "json"))
                except ClusterError as error:  # not created yet
                    seen[name] = str(error)
                    continue
                conditions = (found.get("status") or {}).get("conditions") or []
                states = {c.get("type"): c.get("status") for c in conditions}
                seen[name] = f"{condition}={states.get(condition, 'not reported yet')}"
            waiting = [name for name in waiting if seen[name] != f"{condition}=True"]
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"not {condition} within {timeout_s:.0f} s: "
                    + "; ".join(f"{name}: {seen[name]}" for name in waiting)
                )
            time.sleep(0.25)

    def up(self, *, pool: nodes.GpuNodePool | None = None, timeout_s: float = 120.0) -> bool:
        """Start whatever is not running and wait until all is healthy and the nodes are Ready.

        Returns False when everything was already up (reused), True when it started something.
        """
        if self.is_up():
            self._ensure_nodes(pool or nodes.GpuNodePool(), timeout_s)
            return False
        # A partly running cluster (a crash, a killed test run) is not worth repairing.
        self.down()
        layout = self.layout
        for directory in (layout.logs_dir, layout.pids_dir):
            directory.mkdir(parents=True, exist_ok=True)
        pki.ensure_pki(layout.pki_dir)
        for client in pki.CLIENTS:
            document = components.kubeconfig_document(layout=layout, identity=client.file_stem)
            layout.kubeconfig(client.file_stem).write_text(yaml.safe_dump(document))
        deadline = time.monotonic() + timeout_s
        for component in self.processes():
            self.start_process(component)
            self._wait_healthy(component, deadline)
        self._ensure_nodes(pool or nodes.GpuNodePool(), max(deadline - time.monotonic(), 30))
        return True

    def start_process(self, component: components.Component) -> None:
        """Start `component` in its own session, its log and pid file in the state folder."""
        log = (self.layout.logs_dir / f"{component.name}.log").open("ab")
        process = subprocess.Popen(
            component.argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **component.env},
        )
        log.close()
        _pid_file(self.layout, component.name).write_text(str(process.pid))

    def _wait_healthy(self, component: components.Component, deadline: float) -> None:
        while time.monotonic() < deadline:
            if is_healthy(self.layout, component):
                return
            if running_pid(self.layout, component.name) is None:
                break
            time.sleep(0.25)
        log = self.layout.logs_dir / f"{component.name}.log"
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise ClusterError(f"{component.name} did not become healthy; last lines of {log}:\n{tail}")

    def _ensure_nodes(self, pool: nodes.GpuNodePool, timeout_s: float) -> None:
        manifests = {"apiVersion": "v1", "kind": "List", "items": nodes.gpu_node_manifests(pool)}
        self.kubectl("apply", "-f", "-", input_text=yaml.safe_dump(manifests))
        self.wait_condition(
            "Ready", *[f"node/{name}" for name in pool.node_names()], timeout_s=timeout_s
        )

    def down(self) -> None:
        """Stop every component and delete the cluster's state (see `down`)."""
        down(self.layout)


HELPERS = ("agent.py", "trainkube")  # the demo's node agent and operator


def stop_helpers(layout: components.Layout) -> list[str]:
    """Stop the demo's node agent and operator, if running (tests start their own)."""
    stopped = []
    for name in HELPERS:
        pid = running_pid(layout, name)
        if pid is not None:
            _stop_group(pid)
            stopped.append(name)
    return stopped


def down(layout: components.Layout) -> list[str]:
    """Stop every recorded component (TERM, then KILL after 10 s) and delete the state.

    Needs no binaries, so it works from any shell. Returns the names of what it stopped (and
    of leftover DeepSpeed shared memory it removed: pods here are processes on this machine).
    """
    stopped = stop_helpers(layout)
    for name in reversed(components.COMPONENT_NAMES):
        pid = running_pid(layout, name)
        if pid is not None:
            _stop_group(pid)
            stopped.append(name)
    if layout.state_dir.exists():
        shutil.rmtree(layout.state_dir)
    if shm.remove_stale_segments():
        stopped.append("stale DeepSpeed shared memory")
    return stopped


def _alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not: it has exited, only unreaped)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _stop_group(pid: int, grace_s: float = 10.0) -> None:
    try:
        os.killpg(os.getpgid(pid), signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while _alive(pid):
        time.sleep(0.1)
