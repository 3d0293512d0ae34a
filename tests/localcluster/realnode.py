"""The real CPU node of the local cluster: start it, stop it, load images into it.

`cpu-node-0` is a kubelet with containerd, runc, the CNI bridge, kube-proxy and CoreDNS on
this machine (configs: `nodeconfig`; host changes: `hoststate`), plus the volume provisioner.
`prepare_host` runs before the control plane starts (the apiserver listens on the node's
bridge), `start` after it; `stop` ends every process of the node, found by binary and state
folder whether or not a pid file is left, and undoes its host changes. No registry is
reachable: images come from archives through `import_images`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tests.localcluster import hostnet, hoststate, nodeconfig, ociimage, provisioner
from tests.localcluster.components import NODE_NAME, ClusterError, Component, Layout, log_tail

if TYPE_CHECKING:
    from tests.localcluster.cluster import LocalCluster

HERE = Path(__file__).resolve().parent
NODE_BINARIES = ("kubelet", "kube-proxy", "coredns", "containerd", "containerd-shim-runc-v2")
PROVISIONER = "provisioner.py"
CONTAINERD_NAMESPACE = "k8s.io"
# The tests' image: the static `probe` program (go/probe) and nothing else.
PROBE_IMAGE = "trainkube.local/probe:1"


def cache_dir() -> Path:
    """The cache outside the repository: built binaries, images, the node's image store."""
    return Path(os.environ.get("TRAINKUBE_CACHE_DIR", str(Path.home() / ".cache" / "trainkube")))


def cache_bin_dir() -> Path:
    """Where build-bins.sh links the current binaries (no build: `down` needs none)."""
    return cache_dir() / "bin" / "current"


def install_host_packages() -> None:
    """The Debian packages the node needs (runc, iptables, conntrack, ...), when missing."""
    subprocess.run(["bash", str(HERE / "host-packages.sh")], check=True)


def prepare_host(layout: Layout) -> None:
    """Record the host's settings, then make the bridge and cgroup root the node uses."""
    others = other_clusters(layout)
    if others:
        raise ClusterError(
            "another local cluster runs on this machine (one at a time: the ports, the bridge "
            "and the host settings are shared); stop it first:\n  " + "\n  ".join(others)
        )
    install_host_packages()
    hoststate.begin(layout)
    hostnet.make_bridge()
    hoststate.make_cgroups(layout)


def provisioner_component(layout: Layout) -> Component:
    return Component(
        name=PROVISIONER,
        argv=[
            sys.executable,
            str(HERE / PROVISIONER),
            f"--kubeconfig={layout.kubeconfig('provisioner')}",
            f"--volumes={layout.volumes_dir}",
        ],
    )


def components(layout: Layout, bin_dir: Path) -> list[Component]:
    """Every process of the node, in start order."""
    return [*nodeconfig.node_components(layout, bin_dir), provisioner_component(layout)]


def start(cluster: LocalCluster, deadline: float) -> None:
    """Start the node after the control plane: containerd (with the sandbox image), CoreDNS,
    the kubelet, kube-proxy and the provisioner; return once the node is Ready."""
    layout, bin_dir = cluster.layout, cluster.bin_dir
    began = time.monotonic()
    layout.volumes_dir.mkdir(parents=True, exist_ok=True)
    nodeconfig.write_configs(layout, bin_dir)
    started = {c.name: c for c in components(layout, bin_dir)}
    cluster.start_process(started["containerd"])
    _wait_containerd(cluster, deadline)
    ociimage.write_archive(
        layout.node_dir / "images" / "pause.tar",
        name=nodeconfig.SANDBOX_IMAGE,
        files={"pause": ((bin_dir / "pause").read_bytes(), 0o755)},
        entrypoint=["/pause"],
    )
    import_images([layout.node_dir / "images" / "pause.tar"], layout=layout, bin_dir=bin_dir)
    manifests = [
        *nodeconfig.coredns_rbac(),
        *provisioner.rbac(),
        provisioner.storage_class(),
    ]
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input_text=yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": manifests}),
    )
    cluster.timings["containerd with the sandbox image"] = time.monotonic() - began
    for name in ("coredns", "kubelet", "kube-proxy", PROVISIONER):
        cluster.start_process(started[name])
    kubelet_started = time.monotonic()
    for name in ("coredns", "kubelet", "kube-proxy", PROVISIONER):
        cluster.wait_healthy(started[name], deadline)
    cluster.wait_condition(
        "Ready", f"node/{NODE_NAME}", timeout_s=max(deadline - time.monotonic(), 10)
    )
    cluster.timings["kubelet start to node Ready"] = time.monotonic() - kubelet_started
    cluster.timings["node"] = time.monotonic() - began


def _wait_containerd(cluster: LocalCluster, deadline: float) -> None:
    while time.monotonic() < deadline:
        if ctr(cluster.layout, cluster.bin_dir, "version", check=False).returncode == 0:
            return
        time.sleep(0.1)
    raise ClusterError(
        "containerd did not answer on its socket; " + log_tail(cluster.layout, "containerd")
    )


# -- images -----------------------------------------------------------------------------------
def ctr(
    layout: Layout, bin_dir: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the pinned `ctr` against the node's containerd, in the CRI's namespace."""
    result = subprocess.run(
        [
            str(bin_dir / "ctr"),
            f"--address={layout.containerd_socket.resolve()}",
            f"--namespace={CONTAINERD_NAMESPACE}",
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if check and result.returncode != 0:
        raise ClusterError(f"ctr {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def _present_config_digest(layout: Layout, bin_dir: Path, name: str) -> str | None:
    """The config digest of the node's image called `name`, if it has one."""
    listing = ctr(layout, bin_dir, "images", "ls", f"name=={name}").stdout.splitlines()[1:]
    if not listing:
        return None
    digest = listing[0].split()[2]
    for _depth in range(3):  # an index points at the manifests of its platforms
        blob: dict[str, Any] = json.loads(ctr(layout, bin_dir, "content", "get", digest).stdout)
        if "config" in blob:
            return str(blob["config"]["digest"])
        manifests = [
            m
            for m in blob.get("manifests") or []
            if (m.get("platform") or {}).get("architecture") in (None, "amd64")
        ]
        if not manifests:
            return None
        digest = manifests[0]["digest"]
    return None


# Every archive this process loaded (in order), so that whoever restarts the cluster (a test
# of `down`, say) can load them again where containerd starts empty (a layout without an
# image store in the cache).
_IMPORTED: list[Path] = []


def imported_archives() -> list[Path]:
    """The archives this process loaded into the node that still exist."""
    return [archive for archive in _IMPORTED if archive.exists()]


@dataclass(frozen=True)
class ImportResult:
    archive: Path
    images: list[str]
    skipped: bool  # every image of the archive was there already, with the same digest


def import_images(
    archives: list[Path], *, layout: Layout | None = None, bin_dir: Path | None = None
) -> list[ImportResult]:
    """Load image archives (docker-archive or OCI, e.g. the paths `images/build.sh` prints)
    into the node's containerd, where pods find them by their tag (imagePullPolicy
    IfNotPresent or Never). An archive whose every image is present with the same config
    digest is skipped."""
    if layout is None:
        from tests.localcluster.cluster import default_layout  # noqa: PLC0415 - a cycle

        layout = default_layout()
    bin_dir = bin_dir or cache_bin_dir()
    results = []
    for given in archives:
        archive = Path(given).resolve()
        images = ociimage.archive_images(archive)
        if not images:
            raise ValueError(f"{archive} holds no named image")
        present = all(
            _present_config_digest(layout, bin_dir, image.name) == image.config_digest
            for image in images
        )
        if not present:
            ctr(layout, bin_dir, "images", "import", "--platform=linux/amd64", str(archive))
        results.append(ImportResult(archive, [image.name for image in images], present))
        if archive not in _IMPORTED and not archive.is_relative_to(layout.state_dir):
            _IMPORTED.append(archive)
    if not all(result.skipped for result in results):
        remove_superseded(layout, bin_dir)
    return results


def remove_superseded(layout: Layout, bin_dir: Path) -> list[str]:
    """Remove the images no tag names any more: the CRI keeps each image under its config
    digest (`sha256:...`) beside its tag, so a tag moved to a new build leaves the old build
    behind in full (the 5.9 GB trainer image: its layers and their unpacked snapshot, 12 GB,
    each time the trainer changed, since the kubelet's image GC is off here). Removed with
    `--sync`, so the content and snapshots go at once; a running container keeps its own."""
    names = ctr(layout, bin_dir, "images", "ls", "-q").stdout.split()
    tagged = {_present_config_digest(layout, bin_dir, n) for n in names if ":" in n and "/" in n}
    stale = [n for n in names if n.startswith("sha256:") and n not in tagged]
    for name in stale:
        ctr(layout, bin_dir, "images", "rm", "--sync", name, check=False)
    return stale


def probe_image_archive(bin_dir: Path, folder: Path) -> Path:
    """An archive of the tests' probe image (`PROBE_IMAGE`), written into `folder`."""
    archive = folder / "probe.tar"
    ociimage.write_archive(
        archive,
        name=PROBE_IMAGE,
        files={"probe": ((bin_dir / "probe").read_bytes(), 0o755)},
        entrypoint=["/probe"],
    )
    return archive


# -- stopping ---------------------------------------------------------------------------------
def _processes() -> Iterator[tuple[int, str, list[str]]]:
    """(pid, binary path, argv) of every process we may read."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            exe = os.readlink(proc / "exe").removesuffix(" (deleted)")
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        yield int(proc.name), exe, argv


def state_processes(layout: Layout, names: tuple[str, ...]) -> list[tuple[int, str]]:
    """(pid, name) of the processes of binaries called `names` (or Python scripts) that name
    a file in the state folder on their command line, as every process of the cluster does."""
    state = str(layout.state_dir) + "/"
    found = []
    for pid, exe, argv in _processes():
        if pid == os.getpid() or not any(state in arg for arg in argv):
            continue
        script = Path(argv[1]).name if len(argv) > 1 else ""
        for name in (Path(exe).name, script):
            if name in names:
                found.append((pid, name))
                break
    return found


def node_processes(layout: Layout) -> list[tuple[int, str]]:
    """(pid, name) of every process of the node: its binaries (the shims name their
    containerd's socket), the provisioner, and whatever runs in the node's cgroups (the
    pods' processes)."""
    found = {pid: "pod process" for pid in hoststate.cgroup_pids(layout)}
    found.update(state_processes(layout, (*NODE_BINARIES, PROVISIONER)))
    found.pop(os.getpid(), None)
    return sorted(found.items())


def other_clusters(layout: Layout) -> list[str]:
    """Command lines of cluster processes built here (the binary cache) that belong to
    another state folder: the bridge, ports and host settings are one per machine."""
    cache, state = str(cache_bin_dir().parent) + "/", str(layout.state_dir) + "/"
    names = {*NODE_BINARIES, "etcd", "kube-apiserver"}
    return [
        " ".join(argv)[:200]
        for _pid, exe, argv in _processes()
        if exe.startswith(cache) and Path(exe).name in names and not any(state in a for a in argv)
    ]


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_gone(layout: Layout, names: set[str], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        left = [pid for pid, name in node_processes(layout) if name in names]
        for pid in left:  # our own children must be reaped to be gone
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        left = [pid for pid in left if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def stop(layout: Layout, *, restore: bool = True) -> list[str]:
    """Stop every process of the node (the kubelet first, so nothing restarts; the pods'
    processes are killed), then undo the host changes unless told not to (`restore_host`).
    Returns what it stopped."""
    processes = node_processes(layout)
    stopped = sorted({name for _, name in processes})
    for names, grace in (
        ({"kubelet", "kube-proxy", "coredns", PROVISIONER}, 5.0),
        ({"pod process"}, 0.0),
        ({"containerd-shim-runc-v2"}, 0.0),
        ({"containerd"}, 5.0),
    ):
        pids = [pid for pid, name in node_processes(layout) if name in names]
        _signal_all(pids, signal.SIGTERM if grace else signal.SIGKILL)
        left = _wait_gone(layout, names, grace or 5.0)
        _signal_all(left, signal.SIGKILL)
        _wait_gone(layout, names, 5.0)
    if restore:
        restore_host(layout)
    return stopped


def restore_host(layout: Layout) -> None:
    """`hoststate.restore`, unless it would undo another cluster's changes: not without a
    record of ours while another state folder's cluster runs."""
    others = other_clusters(layout)
    if hoststate.load(layout) is None and others:
        print(
            "not restoring host settings: no record of ours, and another local cluster runs:\n  "
            + "\n  ".join(others),
            file=sys.stderr,
        )
        return
    hoststate.restore(layout)


def leftovers(layout: Layout, baseline: dict[str, Any] | None = None) -> list[str]:
    """What of the node remains: processes, and `hoststate.leftovers` (mounts, bridge, veths,
    iptables chains, cgroups, files, changed sysctls against `baseline`)."""
    found = [f"process {pid} {name}" for pid, name in node_processes(layout)]
    return found + hoststate.leftovers(layout, baseline)
