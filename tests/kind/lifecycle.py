"""`up` and `down` of the kind cluster: build what is missing, record the host, create the
cluster, give it a pod network (local node image), storage and trainkube's images, install the
operator with Helm; and take all of it away again."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.kind import hoststate, images, kindconfig, podnet
from tests.kind.cluster import KindCluster, KindError, build
from tests.kind.settings import LOCAL, PUBLISHED, REPO_ROOT, USER_CONFIG, Settings
from tests.localcluster import provisioner

RELEASE = "trainkube"
# Where each runtime keeps containers and volumes (the nodes' /var, and so their images).
STORAGE = {"podman": Path("/var/lib/containers"), "docker": Path("/var/lib/docker")}
OPERATOR_NAMESPACE = "trainkube-system"


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def prepare(settings: Settings) -> KindCluster:
    """Host packages, kind and kubectl (cached builds)."""
    if settings.runtime == "podman":
        subprocess.run(["bash", str(REPO_ROOT / "tests/kind/host-packages.sh")], check=True)
        # Writes the containers.conf that settings.env() points podman at.
        subprocess.run(["bash", str(REPO_ROOT / "images/podman.sh"), "--version"], check=True)
    kind_bin = build("tests/kind/build-bins.sh") / "kind"
    kubectl = build("tests/localcluster/build-bins.sh") / "kubectl"
    return KindCluster(settings=settings, kind=kind_bin, kubectl_bin=kubectl)


def node_image(cluster: KindCluster) -> tuple[list[str], kindconfig.LocalImage | None]:
    """kind's --image arguments, and what kubeadm must know of a local image."""
    choice = cluster.settings.node_image
    if choice == PUBLISHED:
        return [], None
    image = str(build("tests/kind/build-node-image.sh")) if choice == LOCAL else choice
    labels = json.loads(cluster.runtime("image", "inspect", "--format", "{{json .Labels}}", image))
    etcd, coredns = (
        labels.get("io.trainkube.kind.etcd-tag"),
        labels.get("io.trainkube.kind.coredns-tag"),
    )
    local = kindconfig.LocalImage(etcd, coredns) if etcd and coredns else None
    return ["--image", image], local


def _pid_file(settings: Settings) -> Path:
    return settings.run_dir / "volumes.pid"


def _running(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def start_volumes(cluster: KindCluster) -> None:
    """The `local` StorageClass as the only default, and its provisioner on this machine."""
    cluster.kubectl("apply", "-f", "-", input_text=yaml.safe_dump(provisioner.storage_class()))
    for item in cluster.kubectl_json("get", "storageclass")["items"]:
        name = item["metadata"]["name"]
        if name != provisioner.STORAGE_CLASS:
            key = "storageclass.kubernetes.io/is-default-class"
            cluster.kubectl("annotate", "storageclass", name, f"{key}=false", "--overwrite")
    settings = cluster.settings
    if _running(_pid_file(settings)) is not None:
        return
    settings.volumes_dir.mkdir(parents=True, exist_ok=True)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "tests.kind.volumes", "--kubeconfig", str(settings.kubeconfig)]
    with (settings.logs_dir / "volumes.log").open("ab") as log:
        process = subprocess.Popen(
            [*argv, "--volumes", str(settings.volumes_dir)],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _pid_file(settings).write_text(str(process.pid))


def stop_volumes(settings: Settings) -> None:
    pid = _running(_pid_file(settings))
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    for _ in range(50):
        if _running(_pid_file(settings)) is None:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def create(cluster: KindCluster) -> float:
    """Create the cluster from kind-config.yaml (derived); returns the seconds it took."""
    settings = cluster.settings
    image_args, local = node_image(cluster)
    hoststate.begin(settings)
    config = kindconfig.derive(
        yaml.safe_load(USER_CONFIG.read_text()), volumes_dir=settings.volumes_dir, local=local
    )
    settings.volumes_dir.mkdir(parents=True, exist_ok=True)
    config_file = settings.run_dir / "kind-config.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    step(
        f"kind create cluster ({settings.runtime}, node image: {image_args[-1:] or 'kind default'})"
    )
    start = time.monotonic()
    argv = ["create", "cluster", "--config", str(config_file), *image_args]
    result = cluster.run(
        str(cluster.kind), *argv, "--kubeconfig", str(settings.kubeconfig), check=False
    )
    sys.stderr.write(result.stderr.decode(errors="replace"))
    if result.returncode != 0:
        raise KindError("kind create cluster failed (see above); `make kind-down` cleans up")
    hoststate.remember_bridge(settings)
    if local is not None:
        for net in podnet.configure(cluster):
            print(f"pod network: {net.name} {net.address} pods {net.pod_cidr}")
    cluster.kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=180s")
    return time.monotonic() - start


def install_operator(cluster: KindCluster) -> None:
    helm = build("tests/charts/build-helm.sh")
    argv = [str(helm), "upgrade", "--install", RELEASE, str(REPO_ROOT / "charts" / "trainkube")]
    argv += ["--namespace", OPERATOR_NAMESPACE, "--create-namespace", "--wait", "--timeout", "5m"]
    argv += ["--set", "image.pullPolicy=Never", "--kubeconfig", str(cluster.settings.kubeconfig)]
    print(cluster.run(*argv).stdout.decode().strip())


def up(settings: Settings) -> KindCluster:
    """Everything `make kind-demo` needs before the examples; reuses a running cluster."""
    step("building what is missing (kind, kubeadm, kubectl, the node image, trainkube's images)")
    cluster = prepare(settings)
    archives = images.build_images()
    if cluster.exists():
        print(f"reusing the running kind cluster {settings.name}")
    else:
        workers = sum(
            n.get("role") == "worker" for n in yaml.safe_load(USER_CONFIG.read_text())["nodes"]
        )
        images.check_disk(archives, workers, STORAGE[settings.runtime])
        print(f"cluster created and Ready in {create(cluster):.0f} s")
    print(cluster.kubectl("get", "nodes", "-o", "wide"))
    step("storage: the `local` class, a folder of this machine per claim, shared by the nodes")
    start_volumes(cluster)
    step(f"loading {', '.join(a.name for a in archives)} into the workers")
    marker = settings.run_dir / "loaded.json"
    wanted = {str(a): (a.parent / f"{a.name}.id").read_text().strip() for a in archives}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        print("already loaded")
    else:
        for loaded in images.load(cluster, archives, cluster.workers()):
            print(f"{loaded.node}: {loaded.archive.name} in {loaded.seconds:.0f} s")
        marker.write_text(json.dumps(wanted))
    step(f"helm upgrade --install {RELEASE} charts/trainkube -n {OPERATOR_NAMESPACE}")
    install_operator(cluster)
    return cluster


def down(settings: Settings) -> list[str]:
    """Delete the cluster and undo its host changes; returns what is left (nothing, if all
    went well)."""
    cluster = prepare(settings)
    stop_volumes(settings)
    if cluster.exists():
        cluster.kind_cmd("delete", "cluster", "--name", settings.name)
    record = hoststate.load(settings)
    hoststate.restore(settings)
    left = hoststate.leftovers(settings, record)
    if _running(_pid_file(settings)) is not None:
        left.append("the volume provisioner")
    shutil.rmtree(settings.run_dir, ignore_errors=True)
    return left
