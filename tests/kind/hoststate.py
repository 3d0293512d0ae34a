"""What a kind cluster changes on this machine: recorded before `up`, undone by `down`.

kind and the container runtime make the node containers and their volumes (kind deletes those),
a network (`kind`, kept by kind for the next cluster) with, under podman, a dnsmasq for its names
(dnsname) and iptables chains and rules for it; IP forwarding is turned on, and the nodes'
kubelets set the host kernel's sysctls (panic_on_oops, overcommit...: the local node's record
of them is reused); and kind needs
/lib/modules to exist, which this VM lacks. `begin` records what was there before; `restore`
removes what was not, after the cluster is deleted; `leftovers` lists what is still there.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
from pathlib import Path
from typing import Any

from tests.kind.settings import Settings
from tests.localcluster import hostnet
from tests.localcluster import hoststate as localhost

NETWORK = "kind"  # kind's fixed network name
LIB_MODULES = Path("/lib/modules")
CLUSTER_LABEL = "io.x-k8s.kind.cluster"
# The comment podman's CNI rules carry for a network (iptables-save escapes the quotes).
NETWORK_COMMENT = re.compile(rf'name: \\?"{NETWORK}\\?"')


def _record_file(settings: Settings) -> Path:
    return settings.run_dir / "hoststate.json"


def _out(*argv: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(list(argv), capture_output=True, text=True, env=env, check=False)
    return result.stdout if result.returncode == 0 else ""


def network_exists(settings: Settings) -> bool:
    result = subprocess.run(
        [settings.runtime, "network", "inspect", NETWORK],
        capture_output=True,
        env=settings.env(),
        check=False,
    )
    return result.returncode == 0


def load(settings: Settings) -> dict[str, Any] | None:
    try:
        record: dict[str, Any] = json.loads(_record_file(settings).read_text())
    except (OSError, ValueError):
        return None
    return record


def begin(settings: Settings) -> dict[str, Any]:
    """Record the host as it is (once: a record that exists is kept), and make /lib/modules."""
    record = load(settings)
    if record is not None:
        return record
    record = {
        "network_existed": network_exists(settings),
        "lib_modules_made": not LIB_MODULES.exists(),
        # The nodes' kubelets share the host kernel: they set its sysctls (panic_on_oops,
        # overcommit, ...) as the local node's kubelet does; the same record restores them.
        "sysctls": localhost.read_sysctls(),
        "iptables": hostnet.saves(),
    }
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    _record_file(settings).write_text(json.dumps(record, indent=2))
    LIB_MODULES.mkdir(exist_ok=True)  # kind mounts it into every node
    return record


def _dnsmasq_pids() -> list[int]:
    """dnsname's dnsmasq for kind's network (it serves the nodes' names)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if argv[0].endswith(b"dnsmasq") and any(f"/{NETWORK}/".encode() in a for a in argv):
                pids.append(int(proc.name))
    return pids


def _bridge(settings: Settings) -> str | None:
    """The network's bridge on this machine (podman's dnsname opens DNS on it in INPUT)."""
    if not network_exists(settings):
        return None
    result = subprocess.run(
        [settings.runtime, "network", "inspect", NETWORK, "--format", "{{.NetworkInterface}}"],
        capture_output=True,
        text=True,
        env=settings.env(),
        check=False,
    )
    return result.stdout.strip() or None


def remember_bridge(settings: Settings) -> None:
    """Add the network's bridge to the record, for a `down` that finds the network gone."""
    record = load(settings)
    bridge = _bridge(settings)
    if record is not None and bridge and not record["network_existed"]:
        record["bridge"] = bridge
        _record_file(settings).write_text(json.dumps(record, indent=2))


def _new_iptables(record: dict[str, Any], bridge: str | None) -> dict[str, list[list[str]]]:
    """Per family, the arguments that remove the chains and rules made since the record (the
    network's CNI-* chains, and rules in other chains that carry the network's name or its
    bridge)."""
    interface = re.compile(rf"-[io] {re.escape(bridge)}( |$)") if bridge else None
    commands: dict[str, list[list[str]]] = {}
    for family, dump in hostnet.saves().items():
        before = hostnet.parse_save(record["iptables"].get(family, ""))
        found: list[list[str]] = []
        for table_name, table in hostnet.parse_save(dump).items():
            earlier = before.get(table_name, hostnet.Table([], []))
            chains = [c for c in table.chains if c.startswith("CNI-") and c not in earlier.chains]
            new_rules = [r for r in table.rules if r not in earlier.rules]
            for chain, rule in new_rules:
                ours = (
                    NETWORK_COMMENT.search(rule) is not None
                    or (interface is not None and interface.search(rule) is not None)
                    or any(f"-j {c}" in f"{rule} " for c in chains)
                )
                if chain not in chains and ours:
                    found.append(["-t", table_name, "-D", chain, *shlex.split(rule)])
            found += [["-t", table_name, "-F", c] for c in chains]
            found += [["-t", table_name, "-X", c] for c in chains]
        if found:
            commands[family] = found
    return commands


def restore(settings: Settings) -> None:
    """Undo what the cluster left (run after `kind delete cluster`)."""
    record = load(settings)
    bridge = _bridge(settings) or (record or {}).get("bridge")
    if record is not None and not record["network_existed"] and network_exists(settings):
        subprocess.run(
            [settings.runtime, "network", "rm", NETWORK],
            capture_output=True,
            env=settings.env(),
            check=False,
        )
    for pid in _dnsmasq_pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    if record is None:
        return
    for family, commands in _new_iptables(record, bridge).items():
        for arguments in commands:
            hostnet.run_tool(family, "-w", "5", *arguments)
    if record["lib_modules_made"]:
        with contextlib.suppress(OSError):
            LIB_MODULES.rmdir()
    localhost.restore_sysctls(record)


def leftovers(settings: Settings, record: dict[str, Any] | None) -> list[str]:
    """What of the cluster is still on this machine (after `down`, nothing)."""
    env = settings.env()
    label = f"label={CLUSTER_LABEL}={settings.name}"
    found = [
        f"container {c}"
        for c in _out(settings.runtime, "ps", "-aq", "--filter", label, env=env).split()
    ]
    found += [
        f"volume {v}"
        for v in _out(settings.runtime, "volume", "ls", "-q", "--filter", label, env=env).split()
    ]
    found += [f"dnsmasq {pid}" for pid in _dnsmasq_pids()]
    if record is None:
        return found
    if not record["network_existed"] and network_exists(settings):
        found.append(f"{settings.runtime} network {NETWORK}")
    if record["lib_modules_made"] and LIB_MODULES.exists():
        found.append(str(LIB_MODULES))
    found += [
        f"sysctl {name} = {now} (was {was})"
        for name, (was, now) in localhost.changed_sysctls(record).items()
    ]
    for family, dump in hostnet.saves().items():
        before = hostnet.parse_save(record["iptables"].get(family, ""))
        for name, table in hostnet.parse_save(dump).items():
            earlier = before.get(name, hostnet.Table([], []))
            found += [
                f"{family} -t {name} chain {c}" for c in table.chains if c not in earlier.chains
            ]
            found += [
                f"{family} -t {name} -A {c} {r}"
                for c, r in table.rules
                if (c, r) not in earlier.rules
            ]
    return found
