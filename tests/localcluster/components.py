"""What the local control plane runs: one pure description per process.

Kept apart from the code that starts processes so that the flags can be read (and tested) in
one place. Ports sit away from the usual ones so a real cluster's tools on the same machine do
not collide with ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# Start order; `cluster.down` stops them in reverse.
COMPONENT_NAMES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# Ranges of our own, apart from the ones a kind cluster (10.96/16, 10.244/16) or podman
# (10.88/16) use: two clusters on one machine with the same Service range cross-talk through
# their kube-proxies.
SERVICE_CIDR = "10.213.0.0/16"
KUBERNETES_SERVICE_IP = "10.213.0.1"  # the first address of the range: the `kubernetes` Service
POD_CIDR = "10.212.0.0/16"
NODE_POD_CIDR = "10.212.0.0/24"  # the real node's pods
KWOK_POD_CIDR = "10.212.128.0/17"  # the addresses KWOK makes up for pods on the GPU nodes
# The real CPU node: its bridge's address is the pods' gateway, the node's InternalIP, and
# where the apiserver, the kubelet and CoreDNS listen (reachable from pods, not from outside).
NODE_NAME = "cpu-node-0"
BRIDGE = "trainkube0"
NODE_ADDRESS = "10.212.0.1"
CLUSTER_DOMAIN = "cluster.local"
SERVICE_ACCOUNT_ISSUER = f"https://kubernetes.default.svc.{CLUSTER_DOMAIN}"


class ClusterError(RuntimeError):
    """The local cluster could not be started or checked; the message says where to look."""


@dataclass(frozen=True)
class Layout:
    """Where one local cluster keeps its state, and its addresses and ports.

    The apiserver listens on `apiserver_address`: loopback for a control plane alone, the
    real node's bridge address (`NODE_ADDRESS`, see `cluster.default_layout`) once pods must
    reach it; every other component listens on loopback or on the node address.
    """

    state_dir: Path
    apiserver_address: str = "127.0.0.1"
    apiserver_port: int = 16443
    etcd_client_port: int = 23790
    etcd_peer_port: int = 23800
    controller_manager_port: int = 20257
    scheduler_port: int = 20259
    kubelet_port: int = 20250
    kubelet_healthz_port: int = 20248
    kube_proxy_healthz_port: int = 20256
    kube_proxy_metrics_port: int = 20249
    coredns_ready_port: int = 20181
    # containerd's shims need a short unix-socket path (108 bytes with a 64-character name).
    shim_socket_dir: Path = Path("/run/trainkube-shims")
    cgroup_name: str = "trainkube"
    # containerd's root (images, snapshots, its metadata): None keeps it with the node's state;
    # `cluster.default_layout` puts it in the cache, so a loaded image outlives `down` and the
    # next `up` does not unpack gigabytes again (containers of an old node are the new
    # kubelet's to clean up, as after a reboot).
    image_store: Path | None = None

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pids_dir(self) -> Path:
        return self.state_dir / "pids"

    @property
    def etcd_data_dir(self) -> Path:
        return self.state_dir / "etcd"

    @property
    def node_dir(self) -> Path:
        """The real node's files: configs, containerd, kubelet, CNI state, pod logs."""
        return self.state_dir / "node"

    @property
    def containerd_root(self) -> Path:
        return self.image_store or self.node_dir / "containerd" / "root"

    @property
    def containerd_socket(self) -> Path:
        return self.node_dir / "containerd" / "containerd.sock"

    @property
    def cni_conf_dir(self) -> Path:
        return self.node_dir / "cni" / "net.d"

    @property
    def volumes_dir(self) -> Path:
        """Where the provisioner keeps the folders of `local` PersistentVolumes."""
        return self.state_dir / "volumes"

    @property
    def server_url(self) -> str:
        return f"https://{self.apiserver_address}:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_client_port}"

    def kubeconfig(self, identity: str = "admin") -> Path:
        """The kubeconfig file that authenticates as one of `pki.CLIENTS`."""
        return self.state_dir / f"{identity}.kubeconfig"


@dataclass(frozen=True)
class Component:
    """One process of the control plane and how to tell that it is healthy."""

    name: str
    argv: list[str]
    health_url: str | None = None
    # Health endpoints of the apiserver need a client certificate; the others are open.
    health_needs_client_cert: bool = False
    env: dict[str, str] = field(default_factory=dict)


def log_tail(layout: Layout, name: str, lines: int = 20) -> str:
    """The last lines of a component's log, introduced by where the log is."""
    log = layout.logs_dir / f"{name}.log"
    try:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"no log at {log}"
    return f"last lines of {log}:\n{tail}"


def control_plane(layout: Layout, bin_dir: Path, kwok_config: Path) -> list[Component]:
    """The processes in start order: etcd, apiserver, controller-manager, scheduler, KWOK."""
    pki = layout.pki_dir
    etcd_peer = f"http://127.0.0.1:{layout.etcd_peer_port}"
    etcd = Component(
        name="etcd",
        argv=[
            str(bin_dir / "etcd"),
            "--name=trainkube",
            f"--data-dir={layout.etcd_data_dir}",
            f"--listen-client-urls={layout.etcd_url}",
            f"--advertise-client-urls={layout.etcd_url}",
            f"--listen-peer-urls={etcd_peer}",
            f"--initial-advertise-peer-urls={etcd_peer}",
            f"--initial-cluster=trainkube={etcd_peer}",
            # A throw-away cluster: durability is not worth the fsync latency on a small disk.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ],
        health_url=f"{layout.etcd_url}/health",
    )
    apiserver = Component(
        name="kube-apiserver",
        argv=[
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers={layout.etcd_url}",
            f"--bind-address={layout.apiserver_address}",
            f"--advertise-address={layout.apiserver_address}",
            f"--secure-port={layout.apiserver_port}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            # ExtendedResourceToleration: pods that request nvidia.com/gpu tolerate the taint
            # the GPU nodes carry, as on a real GPU cluster.
            "--enable-admission-plugins=NodeRestriction,ExtendedResourceToleration",
            "--allow-privileged=true",
            "--profiling=false",
            # `kubectl logs` and `exec` go through the kubelet, which checks who asks.
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP",
        ],
        health_url=f"{layout.server_url}/readyz",
        health_needs_client_cert=True,
    )
    cm_kubeconfig = layout.kubeconfig("controller-manager")
    controller_manager = Component(
        name="kube-controller-manager",
        argv=[
            str(bin_dir / "kube-controller-manager"),
            f"--kubeconfig={cm_kubeconfig}",
            f"--authentication-kubeconfig={cm_kubeconfig}",
            f"--authorization-kubeconfig={cm_kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={layout.controller_manager_port}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
        ],
        health_url=f"https://127.0.0.1:{layout.controller_manager_port}/healthz",
    )
    sched_kubeconfig = layout.kubeconfig("scheduler")
    scheduler = Component(
        name="kube-scheduler",
        argv=[
            str(bin_dir / "kube-scheduler"),
            f"--kubeconfig={sched_kubeconfig}",
            f"--authentication-kubeconfig={sched_kubeconfig}",
            f"--authorization-kubeconfig={sched_kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={layout.scheduler_port}",
            "--leader-elect=false",
        ],
        health_url=f"https://127.0.0.1:{layout.scheduler_port}/healthz",
    )
    kwok = Component(
        name="kwok",
        argv=[
            str(bin_dir / "kwok"),
            f"--kubeconfig={layout.kubeconfig('kwok')}",
            f"--config={kwok_config}",
            # Only the nodes we create as fake GPU nodes; the real CPU node is a kubelet's.
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--node-lease-duration-seconds=40",
            f"--cidr={KWOK_POD_CIDR}",
        ],
    )
    return [etcd, apiserver, controller_manager, scheduler, kwok]


def kubeconfig_document(*, layout: Layout, identity: str) -> dict[str, object]:
    """A kubeconfig (as a mapping, to be dumped as YAML) for one client identity."""
    pki = layout.pki_dir
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "trainkube-local",
                "cluster": {
                    "server": layout.server_url,
                    "certificate-authority": str(pki / "ca.crt"),
                },
            }
        ],
        "users": [
            {
                "name": identity,
                "user": {
                    "client-certificate": str(pki / f"{identity}.crt"),
                    "client-key": str(pki / f"{identity}.key"),
                },
            }
        ],
        "contexts": [
            {
                "name": "trainkube-local",
                "context": {"cluster": "trainkube-local", "user": identity},
            }
        ],
        "current-context": "trainkube-local",
    }
