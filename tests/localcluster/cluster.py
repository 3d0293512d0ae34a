"""Bring the local cluster up, check it, and bring it down leaving no process behind.

The cluster is the control plane (etcd, apiserver, controller-manager, scheduler), KWOK's fake
GPU nodes and the real CPU node (`realnode`: kubelet, containerd, kube-proxy, CoreDNS, the
volume provisioner). Every process runs in its own session (process group) with its pid
recorded under the state directory, so `down` can stop it even from another shell, and `up`
can tell a running cluster (reuse it) from a stale one (clean up, start fresh). The node's
processes are also found without pid files, and its host changes are undone (`hoststate`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.localcluster import components, hoststate, nodes, pki, realnode, shm
from tests.localcluster.components import ClusterError as ClusterError  # noqa: PLC0414

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
KWOK_CONFIG = HERE / "kwok-stages.yaml"


def default_layout() -> components.Layout:
    """The layout of this checkout's cluster; TRAINKUBE_LOCALCLUSTER_DIR moves its state. The
    apiserver listens on the real node's bridge address, where pods reach it."""
    state = os.environ.get("TRAINKUBE_LOCALCLUSTER_DIR", str(REPO_ROOT / ".localcluster"))
    return components.Layout(
        state_dir=Path(state).resolve(),
        apiserver_address=components.NODE_ADDRESS,
        image_store=realnode.cache_dir() / "containerd",
    )


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
        raise ClusterError("building the cluster's binaries failed (see the Go output above)")
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
    """One local cluster: etcd, kube-apiserver, controller-manager, scheduler, KWOK, and the
    real CPU node."""

    layout: components.Layout
    bin_dir: Path
    # Seconds each stage of the last `up` took (control plane, node, node Ready, ...).
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def prepare(cls, layout: components.Layout | None = None) -> LocalCluster:
        """Build or find the binaries; start nothing."""
        return cls(layout=layout or default_layout(), bin_dir=build_binaries())

    @property
    def kubeconfig(self) -> Path:
        return self.layout.kubeconfig("admin")

    def processes(self) -> list[components.Component]:
        """The control plane's processes (`node_processes`: the real node's)."""
        return components.control_plane(self.layout, self.bin_dir, KWOK_CONFIG)

    def node_processes(self) -> list[components.Component]:
        return realnode.components(self.layout, self.bin_dir)

    def is_up(self) -> bool:
        return all(is_healthy(self.layout, c) for c in self.processes() + self.node_processes())

    def import_images(self, archives: list[Path]) -> list[realnode.ImportResult]:
        """Load image archives into the real node (see `realnode.import_images`)."""
        return realnode.import_images(archives, layout=self.layout, bin_dir=self.bin_dir)

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

    def up(self, *, pool: nodes.GpuNodePool | None = None, timeout_s: float = 180.0) -> bool:
        """Start whatever is not running and wait until all is healthy and the nodes are Ready
        (the real CPU node and the GPU nodes of `pool`).

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
        try:
            # The apiserver listens on the node's bridge: it comes first, host state recorded.
            began = time.monotonic()
            realnode.prepare_host(layout)
            self.timings["host"] = time.monotonic() - began
            for component in self.processes():
                self.start_process(component)
                self.wait_healthy(component, deadline)
            self.timings["control plane"] = time.monotonic() - began - self.timings["host"]
            realnode.start(self, deadline)
            gpu_nodes = time.monotonic()
            self._ensure_nodes(pool or nodes.GpuNodePool(), max(deadline - time.monotonic(), 30))
            self.timings["GPU nodes"] = time.monotonic() - gpu_nodes
        except (ClusterError, OSError, subprocess.CalledProcessError):
            if os.environ.get("TRAINKUBE_KEEP_FAILED_CLUSTER") != "1":
                self.down()
            raise
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

    def wait_healthy(self, component: components.Component, deadline: float) -> None:
        """Wait until `component` is healthy; fail with its log's tail when it dies or the
        deadline passes."""
        while time.monotonic() < deadline:
            if is_healthy(self.layout, component):
                return
            if running_pid(self.layout, component.name) is None:
                break
            time.sleep(0.1)
        raise ClusterError(
            f"{component.name} did not become healthy; "
            + components.log_tail(self.layout, component.name)
        )

    def _ensure_nodes(self, pool: nodes.GpuNodePool, timeout_s: float) -> None:
        manifests = {"apiVersion": "v1", "kind": "List", "items": nodes.gpu_node_manifests(pool)}
        self.kubectl("apply", "-f", "-", input_text=yaml.safe_dump(manifests))
        self.wait_condition(
            "Ready", *[f"node/{name}" for name in pool.node_names()], timeout_s=timeout_s
        )

    def down(self) -> None:
        """Stop every component and delete the cluster's state (see `down`)."""
        down(self.layout)


HELPERS = ("trainkube",)  # the demo's operator


def stop_helpers(layout: components.Layout) -> list[str]:
    """Stop the demo's operator, if running (tests start their own)."""
    stopped = []
    for name in HELPERS:
        pid = running_pid(layout, name)
        if pid is not None:
            _stop_group(pid)
            stopped.append(name)
    return stopped


def down(layout: components.Layout) -> list[str]:
    """Stop everything and delete the state: the real node's processes (with or without pid
    files), each control-plane component (TERM, then KILL after 10 s), then the node's host
    changes (`hoststate.restore`).

    Needs no binaries, so it works from any shell, and may run any number of times. Returns
    the names of what it stopped (and of leftover DeepSpeed shared memory it removed).
    """
    stopped = stop_helpers(layout)
    # The host goes back last: the apiserver's shutdown needs the bridge address it listens on.
    stopped += realnode.stop(layout, restore=False)
    for name in reversed(components.COMPONENT_NAMES):
        pid = running_pid(layout, name)
        if pid is not None:
            _stop_group(pid)
            stopped.append(name)
    # Those whose pid files are gone (a crash, a deleted state folder) are found by what their
    # command lines name.
    for pid, name in realnode.state_processes(layout, (*components.COMPONENT_NAMES, *HELPERS)):
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(pid) != os.getpgid(0):  # never our own group
                _stop_group(pid)
                stopped.append(f"{name} (no pid file)")
    realnode.restore_host(layout)
    if hoststate.our_mounts(layout):
        raise ClusterError(f"mounts left under {layout.state_dir}; not deleting it")
    if layout.state_dir.exists():
        # Never through a mount point that is somehow left.
        subprocess.run(["rm", "-rf", "--one-file-system", str(layout.state_dir)], check=True)
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
