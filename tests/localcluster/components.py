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
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


@dataclass(frozen=True)
class Layout:
    """Where one local cluster keeps its state and which loopback ports it uses."""

    state_dir: Path
    apiserver_port: int = 16443
    etcd_client_port: int = 23790
    etcd_peer_port: int = 23800
    controller_manager_port: int = 20257
    scheduler_port: int = 20259

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
    def server_url(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

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
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
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
            # Only the nodes we create as fake GPU nodes; a real node agent may join later.
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--node-lease-duration-seconds=40",
            f"--cidr={POD_CIDR}",
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
