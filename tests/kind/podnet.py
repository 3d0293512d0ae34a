"""The pod network of a cluster whose node image has no kindnetd (an image from a registry):
what kindnetd would do, done once from the host after the nodes exist.

Each node gets a CNI configuration for a bridge of its own on the pod subnet the
controller-manager gave it (`spec.podCIDR`), a route to every other node's pod subnet through
that node's address, and masquerading for traffic from pods to anything outside the pod range
(the nodes' resolver, for instance). Bridged traffic goes through iptables, so a pod reaches a
Service whose endpoint is on its own bridge (CoreDNS). Nodes are Ready once their CNI
configuration is there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.kind.cluster import KindCluster

CNI_FILE = "/etc/cni/net.d/10-trainkube.conflist"
BRIDGE = "tkbr0"
MASQUERADE_COMMENT = "trainkube pod network"


@dataclass(frozen=True)
class NodeNet:
    name: str
    address: str  # InternalIP
    pod_cidr: str


def node_nets(nodes: dict[str, Any]) -> list[NodeNet]:
    """From `kubectl get nodes -o json`."""
    found = []
    for node in nodes["items"]:
        address = next(
            a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"
        )
        found.append(NodeNet(node["metadata"]["name"], address, node["spec"]["podCIDR"]))
    return sorted(found, key=lambda n: n.name)


def cni_config(pod_cidr: str) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "trainkube",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "hairpinMode": True,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def node_commands(node: NodeNet, others: list[NodeNet], pod_range: str) -> list[list[str]]:
    """What runs inside `node`: routes to the other nodes' pods, bridge netfilter, and the
    masquerade rule (added once)."""
    commands = [["ip", "route", "replace", o.pod_cidr, "via", o.address] for o in others]
    commands.append(["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1"])
    rule = ["POSTROUTING", "-s", pod_range, "!", "-d", pod_range]
    rule += ["-m", "comment", "--comment", MASQUERADE_COMMENT, "-j", "MASQUERADE"]
    commands.append(
        ["sh", "-c", 'iptables -t nat -C "$@" 2>/dev/null || iptables -t nat -A "$@"', "-", *rule]
    )
    return commands


def configure(cluster: KindCluster, pod_range: str = "10.244.0.0/16") -> list[NodeNet]:
    """Configure every node; returns what each got."""
    nets = node_nets(cluster.kubectl_json("get", "nodes"))
    for node in nets:
        others = [o for o in nets if o != node]
        for argv in node_commands(node, others, pod_range):
            cluster.exec(node.name, *argv)
        config = json.dumps(cni_config(node.pod_cidr), indent=2).encode()
        write = f"cat >{CNI_FILE}.tmp && mv {CNI_FILE}.tmp {CNI_FILE}"
        cluster.exec(node.name, "sh", "-c", write, input_bytes=config)
    return nets
