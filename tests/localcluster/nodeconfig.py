"""What the real CPU node runs, as pure functions: configuration files and command lines.

The node (`cpu-node-0`) is a real kubelet with containerd, runc (Debian's), the CNI bridge
plugin, kube-proxy in iptables mode and CoreDNS, all on this machine. Everything it keeps sits
under the cluster's state folder (`Layout.node_dir`); the few host paths it cannot move are
recorded by `hoststate`. Addresses: the node owns a bridge (`BRIDGE`) whose address
(`NODE_ADDRESS`) is the pods' gateway, the node's InternalIP, where the kubelet serves, where
CoreDNS answers, and where the apiserver listens, so pods reach it through the `kubernetes`
Service without it listening on the machine's own network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.localcluster.components import (
    BRIDGE,
    CLUSTER_DOMAIN,
    NODE_ADDRESS,
    NODE_NAME,
    NODE_POD_CIDR,
    POD_CIDR,
    Component,
    Layout,
)

CNI_NETWORK = "trainkube"
SANDBOX_IMAGE = "trainkube.local/pause:1"
# The Debian package's runc (`host-packages.sh`): crun does not work on these machines.
RUNC = Path("/usr/sbin/runc")
NODE_LABELS = {"trainkube.io/node-pool": "cpu", "type": "local-node"}
# The kubelet keeps this much memory for itself and the rest of the system; pods get the
# remainder (~23 GiB of 24). No CPU is held back: the project's CPU jobs ask for 2 workers of
# 1 CPU each, which must fit on the 2-core machines the tests run on.
KUBE_RESERVED = {"memory": "256Mi"}
SYSTEM_RESERVED = {"memory": "512Mi"}
MAX_PODS = 64
# Components of the node in start order; `realnode` stops them in reverse.
NODE_COMPONENT_NAMES = ("containerd", "coredns", "kubelet", "kube-proxy")


def containerd_config(layout: Layout, bin_dir: Path) -> str:
    """containerd's config (TOML, version 3): every path under the node folder, the shims'
    sockets under `Layout.shim_socket_dir` (a unix socket path must stay short), the CNI
    plugins from `bin_dir`/cni."""
    node = layout.node_dir
    runtime = "plugins.'io.containerd.cri.v1.runtime'"
    lines = [
        "version = 3",
        f"root = {_toml(layout.containerd_root)}",
        f"state = {_toml(node / 'containerd' / 'state')}",
        f"temp = {_toml(node / 'containerd' / 'tmp')}",
        "imports = []",
        "oom_score = 0",
        # Plugins that would write outside the node folder, or that nothing here needs.
        "disabled_plugins = ["
        + ", ".join(
            _toml(name)
            for name in (
                "io.containerd.internal.v1.opt",
                "io.containerd.nri.v1.nri",
                "io.containerd.snapshotter.v1.devmapper",
                "io.containerd.snapshotter.v1.zfs",
                "io.containerd.snapshotter.v1.blockfile",
                "io.containerd.snapshotter.v1.erofs",
                "io.containerd.differ.v1.erofs",
                "io.containerd.mount-handler.v1.erofs",
                "io.containerd.image-verifier.v1.bindir",
            )
        )
        + "]",
        "",
        "[grpc]",
        f"  address = {_toml(layout.containerd_socket)}",
        "[ttrpc]",
        f"  address = {_toml(Path(str(layout.containerd_socket) + '.ttrpc'))}",
        "",
        "[plugins.'io.containerd.shim.v1.manager']",
        f"  socket_dir = {_toml(layout.shim_socket_dir)}",
        "",
        "[plugins.'io.containerd.cri.v1.images']",
        "  snapshotter = 'overlayfs'",
        "[plugins.'io.containerd.cri.v1.images'.pinned_images]",
        f"  sandbox = {_toml(SANDBOX_IMAGE)}",
        "",
        f"[{runtime}]",
        # No process here may lower its oom_score_adj (CAP_SYS_RESOURCE is not in the bounding
        # set): without this runc fails every sandbox.
        "  restrict_oom_score_adj = true",
        "  netns_mounts_under_state_dir = true",
        "  cdi_spec_dirs = []",
        f"[{runtime}.containerd]",
        "  default_runtime_name = 'runc'",
        f"[{runtime}.containerd.runtimes.runc]",
        "  runtime_type = 'io.containerd.runc.v2'",
        f"[{runtime}.containerd.runtimes.runc.options]",
        f"  BinaryName = {_toml(RUNC)}",
        f"  Root = {_toml(node / 'runc')}",
        "  SystemdCgroup = false",
        f"[{runtime}.cni]",
        f"  bin_dirs = [{_toml(bin_dir / 'cni')}]",
        f"  conf_dir = {_toml(layout.cni_conf_dir)}",
        "  max_conf_num = 1",
        "",
        "[plugins.'io.containerd.grpc.v1.cri']",
        "  stream_server_address = '127.0.0.1'",
        "  stream_server_port = '0'",
        "",
    ]
    return "\n".join(lines)


def _toml(value: object) -> str:
    """A TOML basic string (JSON's string escapes are TOML's)."""
    return json.dumps(str(value))


def cni_config(layout: Layout) -> dict[str, Any]:
    """The pod network: one bridge, host-local addresses from the node's pod range, the node
    address as gateway, masquerading for traffic leaving the pod range, and host ports."""
    return {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": NODE_POD_CIDR, "gateway": NODE_ADDRESS}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(layout.node_dir / "cni" / "ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(layout: Layout) -> dict[str, Any]:
    """The kubelet's KubeletConfiguration: cgroup v1 with the cgroupfs driver under our own
    cgroup root, its API on the node address with a CA-signed certificate (so `kubectl logs`
    and `exec` work), clients authenticated by certificate or token, CoreDNS for pod DNS."""
    pki = layout.pki_dir
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{layout.cgroup_name}",
        "failSwapOn": False,
        # Nothing here may lower an oom_score_adj; leave the kubelet's as it is.
        "oomScoreAdj": 0,
        "address": NODE_ADDRESS,
        "port": layout.kubelet_port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": layout.kubelet_healthz_port,
        "tlsCertFile": str(pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [NODE_ADDRESS],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": "/etc/resolv.conf",
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "podLogsDir": str(layout.node_dir / "pod-logs"),
        "volumePluginDir": str(layout.node_dir / "volume-plugins"),
        "staticPodPath": "",
        "maxPods": MAX_PODS,
        "podCIDR": NODE_POD_CIDR,
        "kubeReserved": KUBE_RESERVED,
        "systemReserved": SYSTEM_RESERVED,
        # The disk is shared with everything else on this machine: evict only when it is
        # really full, and never collect images (none can be pulled again).
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "2%",
            "nodefs.inodesFree": "2%",
            "imagefs.available": "2%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "nodeStatusReportFrequency": "10s",
        "shutdownGracePeriod": "0s",
        "serializeImagePulls": False,
    }


def kube_proxy_config(layout: Layout) -> dict[str, Any]:
    """kube-proxy in iptables mode. Its conntrack settings are all "leave as is" (0), node
    ports open on the node address only, and never on 127.0.0.1 (which would need
    route_localnet), so it changes no host setting beyond its iptables chains."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(layout.kubeconfig("kube-proxy"))},
        "hostnameOverride": NODE_NAME,
        "bindAddress": NODE_ADDRESS,
        "healthzBindAddress": f"127.0.0.1:{layout.kube_proxy_healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{layout.kube_proxy_metrics_port}",
        "clusterCIDR": POD_CIDR,
        "detectLocalMode": "ClusterCIDR",
        "nodePortAddresses": [f"{NODE_ADDRESS}/32"],
        "oomScoreAdj": 0,
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
            "udpTimeout": "0s",
            "udpStreamTimeout": "0s",
        },
    }


def corefile(layout: Layout) -> str:
    """CoreDNS as a host process on the node address: cluster names from the apiserver
    (pods' own and headless-Service names included), everything else to the host's resolver."""
    return f"""\
.:53 {{
    bind {NODE_ADDRESS}
    errors
    ready 127.0.0.1:{layout.coredns_ready_port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {layout.kubeconfig("coredns")} trainkube-local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    forward . /etc/resolv.conf
    cache 5
}}
"""


def coredns_rbac() -> list[dict[str, Any]]:
    """What CoreDNS's kubernetes plugin reads, granted to its client identity."""
    name = "trainkube:coredns"
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [{"kind": "User", "name": "system:coredns"}],
        },
    ]


def node_components(layout: Layout, bin_dir: Path) -> list[Component]:
    """The node's processes in start order, each logging to the cluster's logs folder."""
    node = layout.node_dir
    containerd = Component(
        name="containerd",
        argv=[str(bin_dir / "containerd"), f"--config={node / 'containerd.toml'}"],
        # containerd finds its shim on PATH.
        env={"PATH": f"{bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    coredns = Component(
        name="coredns",
        argv=[str(bin_dir / "coredns"), f"-conf={node / 'Corefile'}"],
        health_url=f"http://127.0.0.1:{layout.coredns_ready_port}/ready",
    )
    labels = ",".join(f"{key}={value}" for key, value in NODE_LABELS.items())
    kubelet = Component(
        name="kubelet",
        argv=[
            str(bin_dir / "kubelet"),
            f"--config={node / 'kubelet.yaml'}",
            f"--kubeconfig={layout.kubeconfig('kubelet')}",
            f"--root-dir={node / 'kubelet'}",
            f"--cert-dir={node / 'kubelet' / 'pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_ADDRESS}",
            f"--node-labels={labels}",
        ],
        health_url=f"http://127.0.0.1:{layout.kubelet_healthz_port}/healthz",
    )
    kube_proxy = Component(
        name="kube-proxy",
        argv=[str(bin_dir / "kube-proxy"), f"--config={node / 'kube-proxy.yaml'}"],
        health_url=f"http://127.0.0.1:{layout.kube_proxy_healthz_port}/healthz",
    )
    return [containerd, coredns, kubelet, kube_proxy]


def write_configs(layout: Layout, bin_dir: Path) -> None:
    """Render every config file of the node into its folder."""
    node = layout.node_dir
    layout.cni_conf_dir.mkdir(parents=True, exist_ok=True)
    (node / "containerd.toml").write_text(containerd_config(layout, bin_dir))
    (layout.cni_conf_dir / f"10-{CNI_NETWORK}.conflist").write_text(
        json.dumps(cni_config(layout), indent=2)
    )
    (node / "kubelet.yaml").write_text(yaml.safe_dump(kubelet_config(layout)))
    (node / "kube-proxy.yaml").write_text(yaml.safe_dump(kube_proxy_config(layout)))
    (node / "Corefile").write_text(corefile(layout))
