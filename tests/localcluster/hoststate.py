"""What the real node changes on this machine: recorded before, undone by `down`.

A kubelet, the CNI plugins and kube-proxy change the host: sysctls (the kubelet's kernel
defaults, IP forwarding, conntrack), iptables chains and rules in every table of both families,
a bridge with a veth per pod, mounts (volumes, sandboxes' namespaces, container roots), cgroups
and a few folders outside the state folder. `begin` writes the host's values into
`STATE_FILE` before anything changes them; `restore` puts them back and removes what the node
made, and works however far `up` got (with or without the record). `leftovers` lists what of
the node is still there: after `down` it must be empty.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any

from tests.localcluster import hostnet
from tests.localcluster.components import BRIDGE, NODE_ADDRESS, Layout
from tests.localcluster.nodeconfig import CNI_NETWORK

STATE_FILE = "hoststate.json"
CGROUP_ROOT = Path("/sys/fs/cgroup")
# What the kubelet (kernel defaults), the bridge plugin (ip_forward), bridge netfilter and
# kube-proxy (conntrack, route_localnet: configured to leave them alone) may change.
SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
    "net/netfilter/nf_conntrack_udp_timeout",
    "net/netfilter/nf_conntrack_udp_timeout_stream",
    "net/netfilter/nf_conntrack_tcp_be_liberal",
)
CONNTRACK_HASHSIZE = Path("/sys/module/nf_conntrack/parameters/hashsize")
# Folders outside the state folder that the node's programs write to whatever they are told:
# the kubelet's links to container logs and its device-plugin socket, libcni's result cache.
# Our entries go (`our_folder_entries`), and the folders we made once they are empty.
HOST_FOLDERS = (Path("/var/log/containers"), Path("/var/lib/cni"), Path("/var/lib/kubelet"))
KUBELET_DEVICE_PLUGIN_FILES = ("kubelet.sock", "kubelet_internal_checkpoint")


def _proc_sys(name: str) -> Path:
    return Path("/proc/sys") / name


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def load(layout: Layout) -> dict[str, Any] | None:
    """The record `begin` wrote, if any."""
    try:
        record: dict[str, Any] = json.loads((layout.state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record


def _save(layout: Layout, record: dict[str, Any]) -> None:
    path = layout.state_dir / STATE_FILE
    partial = path.with_suffix(".partial")
    with partial.open("w") as out:
        json.dump(record, out, indent=2)
        out.flush()
        os.fsync(out.fileno())
    partial.replace(path)


def cgroup_hierarchies() -> list[Path]:
    """The mounted cgroup v1 hierarchies (a kubelet needs its cgroup root in each)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] == "cgroup":
            found.append(Path(left.split()[4]))
    return sorted(found)


def begin(layout: Layout) -> dict[str, Any]:
    """Record the host's settings the node may change (kept when a record exists already: it
    holds the values from before the first change)."""
    record = load(layout)
    if record is not None:
        return record
    record = {
        # What the node will make (removed by `restore` whatever its state): named here so
        # that the record says everything the node changes.
        "makes": {
            "bridge": f"{BRIDGE} {NODE_ADDRESS}/24, with a veth per pod",
            "cgroups": [str(h / layout.cgroup_name) for h in cgroup_hierarchies()],
            "mounts under": [str(layout.state_dir), str(layout.shim_socket_dir)],
            "iptables": "KUBE-* chains, CNI-* chains of network "
            f"{CNI_NETWORK!r}, rules jumping to them (iptables and ip6tables, every table)",
        },
        # The values from before (restored).
        "sysctls": read_sysctls(),
        "hashsize": _read(CONNTRACK_HASHSIZE),
        "iptables": hostnet.saves(),
        "folders": sorted(str(d) for f in HOST_FOLDERS for d in _folders(f)),
        "nfacct": hostnet.nfacct_objects(),
        "shim_dir_existed": layout.shim_socket_dir.exists(),
        "cgroups_existed": {
            str(h): (h / layout.cgroup_name).exists() for h in cgroup_hierarchies()
        },
    }
    layout.state_dir.mkdir(parents=True, exist_ok=True)
    _save(layout, record)
    return record


def _folders(top: Path) -> list[Path]:
    """`top` and the folders under it (none when it does not exist)."""
    return [Path(d) for d, _, _ in os.walk(top)] if top.is_dir() else []


def make_cgroups(layout: Layout) -> None:
    """The kubelet's cgroup root in every v1 hierarchy; a new cpuset gets its parent's CPUs
    and memory nodes (it cannot take tasks without them)."""
    for hierarchy in cgroup_hierarchies():
        path = hierarchy / layout.cgroup_name
        path.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (path / name).exists() and not (path / name).read_text().strip():
                (path / name).write_text((hierarchy / name).read_text())


# -- mounts, network, cgroups, folders --------------------------------------------------------
def _unescape(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def our_mounts(layout: Layout) -> list[str]:
    """Mount points under the state folder or the shims' socket folder, deepest first."""
    roots = (str(layout.state_dir), str(layout.shim_socket_dir))
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = _unescape(line.split()[4])
        if any(point == root or point.startswith(root + "/") for root in roots):
            points.append(point)
    return sorted(set(points), key=lambda p: (-p.count("/"), p))


def unmount_all(layout: Layout) -> None:
    for _attempt in range(5):
        points = our_mounts(layout)
        if not points:
            return
        for point in points:
            if hostnet.run_tool("umount", point).returncode != 0:
                hostnet.run_tool("umount", "--lazy", point)


def our_cgroups(layout: Layout) -> list[Path]:
    """Every cgroup under our cgroup root, in any hierarchy (v1 and the unified one), deepest
    first."""
    found: list[Path] = []
    for hierarchy in [*cgroup_hierarchies(), CGROUP_ROOT / "unified"]:
        root = hierarchy / layout.cgroup_name
        if root.is_dir():
            found += [Path(d) for d, _, _ in os.walk(root)]
    return sorted(set(found), key=lambda p: (-len(p.parts), str(p)))


def cgroup_pids(layout: Layout) -> set[int]:
    pids: set[int] = set()
    for cgroup in our_cgroups(layout):
        with contextlib.suppress(OSError, ValueError):
            pids |= {int(p) for p in (cgroup / "cgroup.procs").read_text().split()}
    return pids


def remove_cgroups(layout: Layout, record: dict[str, Any] | None) -> None:
    existed = (record or {}).get("cgroups_existed", {})
    for cgroup in our_cgroups(layout):
        if cgroup.name == layout.cgroup_name and existed.get(str(cgroup.parent)):
            continue
        with contextlib.suppress(OSError):
            cgroup.rmdir()


def our_folder_entries(layout: Layout) -> list[Path]:
    """Log links into our state folder, our network's entries in libcni's cache, and the
    kubelet's device-plugin socket and checkpoint."""
    logs, cni, kubelet = HOST_FOLDERS
    found = []
    if logs.is_dir():
        for link in logs.iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(link).startswith(str(layout.state_dir) + "/"):
                    found.append(link)
    # containerd runs the loopback plugin as a network of its own, "cni-loopback".
    for network in (CNI_NETWORK, "cni-loopback"):
        found += sorted(cni.glob(f"results/{network}-*"))
    found += sorted(cni.glob(f"networks/{CNI_NETWORK}"))
    plugins = kubelet / "device-plugins"
    found += [plugins / n for n in KUBELET_DEVICE_PLUGIN_FILES if (plugins / n).exists()]
    return found


# Without a record, only these folders count as the node's (libcni's cache is podman's too).
OWN_FOLDERS = (Path("/var/log/containers"), Path("/var/lib/kubelet/device-plugins"))


def new_folders(record: dict[str, Any] | None) -> list[Path]:
    """Folders under `HOST_FOLDERS` that were not there before, deepest first."""
    if record is None or "folders" not in record:
        found = [d for d in (*OWN_FOLDERS, Path("/var/lib/kubelet")) if d.is_dir()]
    else:
        before = set(record["folders"])
        found = [d for f in HOST_FOLDERS for d in _folders(f) if str(d) not in before]
    return sorted(found, key=lambda d: (-len(d.parts), str(d)))


def remove_folders(layout: Layout, record: dict[str, Any] | None) -> None:
    for entry in our_folder_entries(layout):
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                hostnet.run_tool("rm", "-rf", str(entry))
            else:
                entry.unlink()
    for folder in new_folders(record):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty: what somebody else put there stays
    if not (record or {}).get("shim_dir_existed", False):
        hostnet.run_tool("rm", "-rf", str(layout.shim_socket_dir))


def read_sysctls() -> dict[str, str]:
    """The values of the sysctls a kubelet, the CNI plugins or kube-proxy may change."""
    values = {name: _read(_proc_sys(name)) for name in SYSCTLS}
    return {name: value for name, value in values.items() if value is not None}


def changed_sysctls(record: dict[str, Any] | None) -> dict[str, tuple[str, str | None]]:
    """Recorded sysctls (and the conntrack table size) whose value differs now:
    name -> (recorded, current)."""
    if record is None:
        return {}
    changed: dict[str, tuple[str, str | None]] = {}
    for name, value in record["sysctls"].items():
        now = _read(_proc_sys(name))
        if now is not None and now.split() != value.split():
            changed[name] = (value, now)
    hashsize = _read(CONNTRACK_HASHSIZE)
    if record.get("hashsize") and hashsize not in (None, record["hashsize"]):
        changed[str(CONNTRACK_HASHSIZE)] = (record["hashsize"], hashsize)
    return changed


def restore_sysctls(record: dict[str, Any] | None) -> None:
    for name, (value, _now) in changed_sysctls(record).items():
        path = Path(name) if name.startswith("/") else _proc_sys(name)
        with contextlib.suppress(OSError):
            path.write_text(value)


def restore(layout: Layout) -> None:
    """Undo what the node changed (its processes must be stopped first); then the record goes."""
    record = load(layout)
    unmount_all(layout)
    hostnet.restore(record)
    remove_cgroups(layout, record)
    remove_folders(layout, record)
    restore_sysctls(record)
    with contextlib.suppress(FileNotFoundError):
        (layout.state_dir / STATE_FILE).unlink()


def leftovers(layout: Layout, baseline: dict[str, Any] | None = None) -> list[str]:
    """What of the node remains on this machine (each as a line of text); `baseline` is a
    record from `load` taken before `down`, to compare sysctls with (the record itself goes
    with `down`). Processes are `realnode.node_processes`' business, cgroup members here."""
    found = [f"mount {point}" for point in our_mounts(layout)]
    found += hostnet.leftovers(baseline)
    found += [f"cgroup {c}" for c in our_cgroups(layout)]
    found += [f"cgroup member {pid}" for pid in sorted(cgroup_pids(layout))]
    found += [f"file {entry}" for entry in our_folder_entries(layout)]
    if baseline is not None:
        found += [f"folder {folder}" for folder in new_folders(baseline)]
    if layout.shim_socket_dir.exists():
        found.append(f"folder {layout.shim_socket_dir}")
    if (layout.state_dir / STATE_FILE).exists():
        found.append(f"host record {layout.state_dir / STATE_FILE} (not restored)")
    for name, (value, now) in changed_sysctls(baseline).items():
        found.append(f"sysctl {name} = {now} (was {value})")
    return found
