"""The node's network on the host: the bridge and its veths, iptables and nfacct.

The kubelet, kube-proxy and the CNI plugins add chains and rules to every table of both
families (KUBE-* everywhere, a CNI-* chain per pod with our network's name in its comments)
and kube-proxy two netfilter accounting objects. `cleanup_commands` finds ours in an
iptables-save dump and leaves everybody else's (podman's CNI chains, say) alone.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.localcluster.components import BRIDGE, NODE_ADDRESS
from tests.localcluster.nodeconfig import CNI_NETWORK

IPTABLES = ("iptables", "ip6tables")
OUR_COMMENT = re.compile(rf'name: \\?"{CNI_NETWORK}\\?"')
JUMP = re.compile(r"(?:^| )-[jg] (\S+)")


# `down` may run from any shell: the system tools are looked up in sbin folders too.
SEARCH_PATH = f"{os.environ.get('PATH', '')}:/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin"


def run_tool(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run a system tool; a missing one counts as failed (exit 127), as in a shell."""
    program = shutil.which(argv[0], path=SEARCH_PATH)
    if program is None:
        return subprocess.CompletedProcess(argv, 127, "", f"{argv[0]}: not found")
    return subprocess.run([program, *argv[1:]], capture_output=True, text=True, check=False)


def _checked(*argv: str) -> None:
    result = run_tool(*argv)
    if result.returncode != 0:
        raise OSError(f"{' '.join(argv)} failed: {result.stderr.strip()}")


def make_bridge() -> None:
    """The node's bridge with its address, before the apiserver binds to that address (the
    CNI bridge plugin finds it and attaches pods to it)."""
    if not Path(f"/sys/class/net/{BRIDGE}").exists():
        _checked("ip", "link", "add", BRIDGE, "type", "bridge")
    if NODE_ADDRESS not in run_tool("ip", "-4", "-o", "addr", "show", "dev", BRIDGE).stdout:
        _checked("ip", "addr", "add", f"{NODE_ADDRESS}/24", "dev", BRIDGE)
    _checked("ip", "link", "set", BRIDGE, "up")


def our_veths() -> list[str]:
    listing = run_tool("ip", "-o", "link", "show", "master", BRIDGE).stdout
    return [
        line.split(":")[1].strip().split("@")[0] for line in listing.splitlines() if ":" in line
    ]


def remove_network() -> None:
    for veth in our_veths():
        run_tool("ip", "link", "delete", veth)
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        run_tool("ip", "link", "delete", BRIDGE)


def nfacct_objects() -> list[str]:
    """Names of the netfilter accounting objects (kube-proxy makes two for its metrics)."""
    if not have_tool("nfacct"):
        return []
    listing = run_tool("nfacct", "list").stdout
    return sorted(
        line.rsplit("=", 1)[1].strip(" ;") for line in listing.splitlines() if "=" in line
    )


def remove_nfacct(record: dict[str, Any] | None) -> None:
    """kube-proxy's accounting objects (once no rule uses them)."""
    before = set((record or {}).get("nfacct", []))
    for name in nfacct_objects():
        if name not in before:
            run_tool("nfacct", "delete", name)


@dataclass(frozen=True)
class Table:
    """One table of an iptables-save dump: its chains (built-in and user) and rules."""

    chains: list[str]
    rules: list[tuple[str, str]]  # (chain, the rule after "-A CHAIN ")


def parse_save(text: str) -> dict[str, Table]:
    """iptables-save output as tables."""
    tables: dict[str, Table] = {}
    current: Table | None = None
    for line in text.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:], Table([], []))
        elif current is not None and line.startswith(":"):
            current.chains.append(line[1:].split()[0])
        elif current is not None and line.startswith("-A "):
            chain, _, rule = line[3:].partition(" ")
            current.rules.append((chain, rule))
    return tables


def _target(rule: str) -> str | None:
    found = JUMP.search(rule)
    return found.group(1) if found else None


def our_chains(table: Table) -> set[str]:
    """The node's chains: kubelet's and kube-proxy's (KUBE-*), and the CNI chains of our pod
    network (a rule in or to them carries our network's name; podman's carry its own)."""
    ours = {c for c in table.chains if c.startswith("KUBE-")}
    for chain, rule in table.rules:
        if OUR_COMMENT.search(rule):
            # The port-mapping plugin's CNI-HOSTPORT-* chains are shared by every network.
            if chain.startswith("CNI-") and not chain.startswith("CNI-HOSTPORT-"):
                ours.add(chain)
            target = _target(rule)
            if target and target.startswith("CNI-"):
                ours.add(target)
    return ours


def cleanup_commands(current: str, before: str = "") -> list[list[str]]:
    """The iptables arguments that remove the node's chains and rules from `current` (a save
    dump), leaving everything else: rules elsewhere that jump to our chains or carry our
    network's name go first, then our chains are flushed and deleted. Shared CNI port-mapping
    chains that were not in `before` go too once nothing but their jumps is left in them."""
    commands: list[list[str]] = []
    earlier = parse_save(before)
    for name, table in parse_save(current).items():
        ours = our_chains(table)
        kept = [
            (chain, rule)
            for chain, rule in table.rules
            if chain not in ours and _target(rule) not in ours and not OUR_COMMENT.search(rule)
        ]
        existed = set(earlier[name].chains) if name in earlier else set()
        for chain in table.chains:
            unused = not any(c == chain for c, _ in kept)
            if chain.startswith("CNI-HOSTPORT-") and chain not in existed and unused:
                ours.add(chain)
        deleted_rules = [
            (chain, rule)
            for chain, rule in table.rules
            if chain not in ours and (_target(rule) in ours or OUR_COMMENT.search(rule))
        ]
        for chain, rule in deleted_rules:
            commands.append(["-t", name, "-D", chain, *_split(rule)])
        for chain in sorted(ours):
            commands.append(["-t", name, "-F", chain])
        for chain in sorted(ours):
            commands.append(["-t", name, "-X", chain])
    return commands


def _split(rule: str) -> list[str]:
    """A saved rule as arguments (iptables-save quotes with "..." and escapes \\")."""
    return shlex.split(rule)


def clean_iptables(record: dict[str, Any] | None) -> None:
    for family in IPTABLES:
        if not have_tool(family):
            continue
        before = (record or {}).get("iptables", {}).get(family, "")
        for _attempt in range(3):  # kube-proxy may be mid-sync when stopped: look again
            commands = cleanup_commands(run_tool(f"{family}-save").stdout, before)
            if not commands:
                break
            for arguments in commands:
                run_tool(family, "-w", "5", *arguments)


def have_tool(program: str) -> bool:
    return shutil.which(program, path=SEARCH_PATH) is not None


def saves() -> dict[str, str]:
    """iptables-save's dump of each family (empty where the tool is missing)."""
    return {family: run_tool(f"{family}-save").stdout for family in IPTABLES}


def restore(record: dict[str, Any] | None) -> None:
    """Remove the veths, the bridge, our chains and rules, and kube-proxy's nfacct objects."""
    remove_network()
    clean_iptables(record)
    remove_nfacct(record)


def leftovers(record: dict[str, Any] | None) -> list[str]:
    """The node's network things still there: bridge, veths, chains and rules, and (with a
    record of what was there before) nfacct objects."""
    found = []
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        found.append(f"bridge {BRIDGE}")
    found += [f"veth {veth}" for veth in our_veths()]
    for family, dump in saves().items():
        for name, table in parse_save(dump).items():
            found += [f"{family} -t {name} chain {c}" for c in sorted(our_chains(table))]
            found += [
                f"{family} -t {name} rule -A {chain} {rule}"
                for chain, rule in table.rules
                if OUR_COMMENT.search(rule) or (_target(rule) or "").startswith("KUBE-")
            ]
    if record is not None:
        before = set(record.get("nfacct", []))
        found += [f"nfacct {name}" for name in nfacct_objects() if name not in before]
    return found
