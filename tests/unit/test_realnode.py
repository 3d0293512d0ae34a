"""The real CPU node's pure parts: addresses, configs, certificates, the iptables clean-up,
image archives and the volume provisioner's manifests."""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import tarfile
import tomllib
from pathlib import Path

import pytest
from cryptography import x509

from tests.localcluster import components, hostnet, nodeconfig, ociimage, pki, provisioner
from tests.localcluster.cluster import default_layout

LAYOUT = components.Layout(state_dir=Path("/state"), apiserver_address=components.NODE_ADDRESS)
BIN = Path("/bin-dir")


def _net(cidr: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(cidr)


def test_ranges_are_our_own_and_consistent() -> None:
    service, pods = _net(components.SERVICE_CIDR), _net(components.POD_CIDR)
    node_pods, kwok_pods = _net(components.NODE_POD_CIDR), _net(components.KWOK_POD_CIDR)
    # Not kind's defaults, nor podman's: two clusters with one Service range cross-talk.
    for foreign in ("10.96.0.0/16", "10.244.0.0/16", "10.88.0.0/16"):
        assert not service.overlaps(_net(foreign))
        assert not pods.overlaps(_net(foreign))
    assert not service.overlaps(pods)
    assert node_pods.subnet_of(pods)
    assert kwok_pods.subnet_of(pods)
    assert not node_pods.overlaps(kwok_pods)
    assert ipaddress.IPv4Address(components.NODE_ADDRESS) == next(node_pods.hosts())
    assert ipaddress.IPv4Address(components.KUBERNETES_SERVICE_IP) == next(service.hosts())


def test_the_cluster_listens_on_loopback_or_the_node_bridge_only() -> None:
    layout = default_layout()
    assert layout.apiserver_address == components.NODE_ADDRESS
    assert layout.server_url == f"https://{components.NODE_ADDRESS}:16443"
    allowed = {"127.0.0.1", components.NODE_ADDRESS}
    kubelet = nodeconfig.kubelet_config(layout)
    proxy = nodeconfig.kube_proxy_config(layout)
    addresses = [
        kubelet["address"],
        kubelet["healthzBindAddress"],
        proxy["bindAddress"],
        proxy["healthzBindAddress"].split(":")[0],
        proxy["metricsBindAddress"].split(":")[0],
        *(ip.split("/")[0] for ip in proxy["nodePortAddresses"]),
    ]
    assert set(addresses) <= allowed
    assert f"bind {components.NODE_ADDRESS}" in nodeconfig.corefile(layout)
    plane = components.control_plane(layout, BIN, Path("/k"))
    apiserver = next(c for c in plane if c.name == "kube-apiserver")
    assert f"--bind-address={components.NODE_ADDRESS}" in apiserver.argv
    containerd = tomllib.loads(nodeconfig.containerd_config(layout, BIN))
    stream = containerd["plugins"]["io.containerd.grpc.v1.cri"]
    assert stream["stream_server_address"] == "127.0.0.1"


def test_apiserver_calls_the_kubelet_with_a_client_certificate_it_checks() -> None:
    plane = components.control_plane(LAYOUT, BIN, Path("/k"))
    argv = next(c for c in plane if c.name == "kube-apiserver").argv
    flags = dict(a[2:].split("=", 1) for a in argv[1:] if "=" in a)
    assert flags["kubelet-client-certificate"] == "/state/pki/apiserver-kubelet-client.crt"
    assert flags["kubelet-certificate-authority"] == "/state/pki/ca.crt"
    kubelet = nodeconfig.kubelet_config(LAYOUT)
    assert kubelet["authentication"]["x509"]["clientCAFile"] == "/state/pki/ca.crt"
    assert kubelet["authentication"]["anonymous"]["enabled"] is False
    assert kubelet["tlsCertFile"] == "/state/pki/kubelet-serving.crt"


def test_kubelet_config_fits_this_kind_of_machine() -> None:
    config = nodeconfig.kubelet_config(LAYOUT)
    assert config["failCgroupV1"] is False
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["cgroupRoot"] == f"/{LAYOUT.cgroup_name}"
    assert config["failSwapOn"] is False
    assert config["oomScoreAdj"] == 0  # nobody here may lower one
    assert config["clusterDNS"] == [components.NODE_ADDRESS]
    assert config["clusterDomain"] == "cluster.local"
    assert config["containerRuntimeEndpoint"] == f"unix://{LAYOUT.containerd_socket}"
    assert "cpu" not in config["kubeReserved"]  # two 1-CPU workers fit on 2 cores
    assert config["imageGCHighThresholdPercent"] == 100  # no image can be pulled again
    for key in ("podLogsDir", "volumePluginDir"):
        assert Path(config[key]).is_relative_to(LAYOUT.node_dir)


def test_containerd_keeps_everything_under_the_node_folder() -> None:
    config = tomllib.loads(nodeconfig.containerd_config(LAYOUT, BIN))
    node = LAYOUT.node_dir
    for path in (config["root"], config["state"], config["temp"], config["grpc"]["address"]):
        assert Path(path).is_relative_to(node)
    assert config["imports"] == []
    runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True
    assert runtime["netns_mounts_under_state_dir"] is True
    runc = runtime["containerd"]["runtimes"]["runc"]["options"]
    assert runc["BinaryName"] == "/usr/sbin/runc"
    assert Path(runc["Root"]).is_relative_to(node)
    assert runtime["cni"]["bin_dirs"] == [str(BIN / "cni")]
    assert runtime["cni"]["conf_dir"] == str(LAYOUT.cni_conf_dir)
    images = config["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == nodeconfig.SANDBOX_IMAGE
    shims = config["plugins"]["io.containerd.shim.v1.manager"]["socket_dir"]
    assert len(shims) + 1 + 64 < 108  # a unix socket's path limit, with the shim's name
    assert "io.containerd.nri.v1.nri" in config["disabled_plugins"]


def test_pod_network_is_one_bridge_with_the_node_address_as_gateway() -> None:
    config = nodeconfig.cni_config(LAYOUT)
    bridge = config["plugins"][0]
    assert bridge["bridge"] == components.BRIDGE
    assert bridge["isGateway"] is True
    [[pod_range]] = bridge["ipam"]["ranges"]
    assert pod_range == {"subnet": components.NODE_POD_CIDR, "gateway": components.NODE_ADDRESS}
    assert Path(bridge["ipam"]["dataDir"]).is_relative_to(LAYOUT.node_dir)


def test_kube_proxy_changes_no_conntrack_setting_nor_route_localnet() -> None:
    config = nodeconfig.kube_proxy_config(LAYOUT)
    assert config["mode"] == "iptables"
    assert config["conntrack"]["maxPerCore"] == 0
    for key in ("tcpEstablishedTimeout", "tcpCloseWaitTimeout", "udpTimeout", "udpStreamTimeout"):
        assert config["conntrack"][key] == "0s"
    assert config["iptables"]["localhostNodePorts"] is False
    assert config["clusterCIDR"] == components.POD_CIDR


def test_node_processes_start_in_order_with_state_folder_on_their_command_lines() -> None:
    started = nodeconfig.node_components(LAYOUT, BIN)
    assert tuple(c.name for c in started) == nodeconfig.NODE_COMPONENT_NAMES
    for component in started:
        assert Path(component.argv[0]) == BIN / component.name
        # `down` finds them by this, pid files or not.
        assert any(str(LAYOUT.state_dir) in arg for arg in component.argv[1:])
    kubelet = next(c for c in started if c.name == "kubelet")
    assert "--node-labels=trainkube.io/node-pool=cpu,type=local-node" in kubelet.argv
    assert f"--hostname-override={components.NODE_NAME}" in kubelet.argv


def test_certificates_name_the_addresses_clients_use(tmp_path: Path) -> None:
    pki.ensure_pki(tmp_path)

    def sans(stem: str) -> set[str]:
        cert = x509.load_pem_x509_certificate((tmp_path / f"{stem}.crt").read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} | set(
            names.get_values_for_type(x509.DNSName)
        )

    assert {"127.0.0.1", components.NODE_ADDRESS, components.KUBERNETES_SERVICE_IP} <= sans(
        "apiserver"
    )
    assert "kubernetes.default.svc.cluster.local" in sans("apiserver")
    assert sans("kubelet-serving") == {components.NODE_ADDRESS, components.NODE_NAME}
    kubelet = x509.load_pem_x509_certificate((tmp_path / "kubelet.crt").read_bytes())
    assert kubelet.subject.rfc4514_string() == "CN=system:node:cpu-node-0,O=system:nodes"


SAVED = r"""# Generated by iptables-save
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:CNI-FORWARD - [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-FORWARD - [0:0]
-A INPUT -j KUBE-FIREWALL
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-aaa - [0:0]
:CNI-bbb - [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:CNI-DN-ccc - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A POSTROUTING -s 10.212.0.5/32 -m comment --comment "name: \"trainkube\" id: \"1\"" -j CNI-aaa
-A POSTROUTING -s 10.88.0.2/32 -m comment --comment "name: \"podman\" id: \"2\"" -j CNI-bbb
-A CNI-aaa ! -d 224.0.0.0/4 -m comment --comment "name: \"trainkube\" id: \"1\"" -j MASQUERADE
-A CNI-bbb ! -d 224.0.0.0/4 -m comment --comment "name: \"podman\" id: \"2\"" -j MASQUERADE
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"trainkube\" id: \"1\"" -j CNI-DN-ccc
-A CNI-DN-ccc -p tcp --dport 80 -j DNAT --to-destination 10.212.0.5:80
COMMIT
"""


def test_iptables_clean_up_takes_ours_and_leaves_podmans() -> None:
    before = "*filter\n:INPUT ACCEPT [0:0]\n:CNI-FORWARD - [0:0]\nCOMMIT\n"
    commands = [" ".join(c) for c in hostnet.cleanup_commands(SAVED, before)]
    assert commands == [
        "-t filter -D INPUT -j KUBE-FIREWALL",
        "-t filter -D FORWARD -m comment --comment kubernetes forwarding rules -j KUBE-FORWARD",
        "-t filter -F KUBE-FIREWALL",
        "-t filter -F KUBE-FORWARD",
        "-t filter -X KUBE-FIREWALL",
        "-t filter -X KUBE-FORWARD",
        "-t nat -D PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
        '-t nat -D POSTROUTING -s 10.212.0.5/32 -m comment --comment name: "trainkube" id: "1" '
        "-j CNI-aaa",
        "-t nat -F CNI-DN-ccc",
        "-t nat -F CNI-HOSTPORT-DNAT",
        "-t nat -F CNI-aaa",
        "-t nat -X CNI-DN-ccc",
        "-t nat -X CNI-HOSTPORT-DNAT",
        "-t nat -X CNI-aaa",
    ]
    # Shared port-mapping chains that were there before stay (only our rules in them go).
    kept = hostnet.cleanup_commands(SAVED, SAVED)
    assert ["-t", "nat", "-X", "CNI-HOSTPORT-DNAT"] not in kept
    assert ["-t", "nat", "-X", "CNI-DN-ccc"] in kept
    [ours_in_shared] = [c for c in kept if c[2:4] == ["-D", "CNI-HOSTPORT-DNAT"]]
    assert ours_in_shared[-3:] == ['dnat name: "trainkube" id: "1"', "-j", "CNI-DN-ccc"]


def test_iptables_clean_up_of_a_clean_host_does_nothing() -> None:
    assert hostnet.cleanup_commands("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n") == []
    assert hostnet.cleanup_commands("") == []


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("trainkube/trainer:cpu", "docker.io/trainkube/trainer:cpu"),
        ("ghcr.io/trainkube/trainer-cpu:0.1.0", "ghcr.io/trainkube/trainer-cpu:0.1.0"),
        ("localhost/trainkube/trainer", "localhost/trainkube/trainer:latest"),
        ("localhost:5000/x:1", "localhost:5000/x:1"),
    ],
)
def test_image_names_are_normalized_as_containerd_stores_them(given: str, stored: str) -> None:
    assert ociimage.normalize(given) == stored


def test_an_oci_archive_is_reproducible_and_reads_back(tmp_path: Path) -> None:
    files = {"probe": (b"\x7fELF...", 0o755), "etc/motd": (b"hi\n", 0o644)}
    first = ociimage.write_archive(
        tmp_path / "a.tar", name="trainkube.local/probe:1", files=files, entrypoint=["/probe"]
    )
    second = ociimage.write_archive(
        tmp_path / "b.tar", name="trainkube.local/probe:1", files=files, entrypoint=["/probe"]
    )
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert first == second
    assert ociimage.archive_images(tmp_path / "a.tar") == [first]
    with tarfile.open(tmp_path / "a.tar") as tar:
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
    annotations = index["manifests"][0]["annotations"]
    assert annotations[ociimage.NAME_ANNOTATION] == "trainkube.local/probe:1"


def test_a_docker_archive_reads_as_its_tags_and_config_digest(tmp_path: Path) -> None:
    config = b'{"architecture":"amd64","os":"linux"}'
    manifest = [{"Config": "abc.json", "RepoTags": ["ghcr.io/x/y:1", "y:2"], "Layers": []}]
    with tarfile.open(tmp_path / "d.tar", "w") as tar:
        for name, data in (("manifest.json", json.dumps(manifest).encode()), ("abc.json", config)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    digest = f"sha256:{hashlib.sha256(config).hexdigest()}"
    assert ociimage.archive_images(tmp_path / "d.tar") == [
        ociimage.ArchivedImage("ghcr.io/x/y:1", digest),
        ociimage.ArchivedImage("docker.io/library/y:2", digest),
    ]


def _claim(**spec: object) -> dict[str, object]:
    return {
        "metadata": {"namespace": "ns", "name": "ckpt", "uid": "0123456789abcdef"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
            **spec,
        },
        "status": {"phase": "Pending"},
    }


def test_provisioner_serves_unbound_claims_of_the_default_class_only() -> None:
    assert provisioner.wants_volume(_claim(storageClassName="local"))
    assert provisioner.wants_volume(_claim())
    assert not provisioner.wants_volume(_claim(storageClassName="manual"))
    assert not provisioner.wants_volume(_claim(volumeName="pv-1"))


def test_provisioned_volume_is_a_folder_on_the_node_bound_to_its_claim() -> None:
    claim = _claim()
    folder = provisioner.volume_folder(Path("/state/volumes"), claim)
    assert folder == Path("/state/volumes/ns-ckpt-01234567")
    volume = provisioner.volume_manifest(claim, folder)
    spec = volume["spec"]
    assert spec["hostPath"]["path"] == str(folder)
    assert spec["persistentVolumeReclaimPolicy"] == "Delete"
    assert spec["claimRef"]["uid"] == "0123456789abcdef"
    [term] = spec["nodeAffinity"]["required"]["nodeSelectorTerms"]
    assert term["matchExpressions"][0]["values"] == [components.NODE_NAME]
    assert provisioner.released({**volume, "status": {"phase": "Released"}})
    assert not provisioner.released({**volume, "status": {"phase": "Bound"}})
    assert not provisioner.released({"metadata": {}, "status": {"phase": "Released"}})
    assert provisioner.storage_class()["metadata"]["annotations"] == {
        "storageclass.kubernetes.io/is-default-class": "true"
    }
