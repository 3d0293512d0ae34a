"""The local CPU node agent: a kubelet for CPU pods that runs their containers as processes.

It registers a Node (`cpu-node-0`) with declared CPU and memory, keeps it Ready with leases,
provisions a local folder for each claim that asks for the `local` storage class (and for any
unbound claim without a class), and for every pod the scheduler binds to the node: writes its
ConfigMap, Secret and service-account files, starts each container in a mount namespace of its
own (see `podplan`), reports Running, then the exit code and reason, exactly as the process
ended. Deleting a pod kills its process group. A pod succeeds only when its process exits 0.

    python tests/localcluster/agent.py            # run against the local cluster (foreground)
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trainkube import timestamps

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.localcluster import podplan
from tests.localcluster.cluster import default_layout

NODE = "cpu-node-0"
STORAGE_CLASS = "local"
log = logging.getLogger("node-agent")


def pod_log(state: Path, namespace: str, pod: str) -> Path:
    """Where the agent keeps the log of a pod's (first) container."""
    folders = sorted((state / "pods").glob(f"{namespace}_{pod}_*"))
    if not folders:
        raise FileNotFoundError(f"no pod {namespace}/{pod} ran on {NODE}")
    return next(folders[-1].glob("*.log"))


def node_manifest(name: str = NODE, *, cpu: str = "16", memory: str = "64Gi") -> dict[str, Any]:
    resources = {"cpu": cpu, "memory": memory, "pods": "64", "ephemeral-storage": "100Gi"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "trainkube.io/node-pool": "cpu",
                "type": "local-process",
            },
        },
        "status": {"capacity": resources, "allocatable": resources},
    }


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    pod_dir: Path
    started: str


class Agent:
    def __init__(self, api: client.ApiClient, state: Path, venv: Path) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.storage = client.StorageV1Api(api)
        self.state = state
        self.venv = venv
        self.running: dict[str, Running] = {}
        self.finished: set[str] = set()

    # -- node ---------------------------------------------------------------------------------
    def register(self) -> None:
        manifest = node_manifest()
        try:
            self.core.create_node(manifest)
        except ApiException as error:
            if error.status != 409:
                raise
        self.heartbeat()
        try:
            self.storage.create_storage_class(
                {
                    "apiVersion": "storage.k8s.io/v1",
                    "kind": "StorageClass",
                    "metadata": {
                        "name": STORAGE_CLASS,
                        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                    },
                    "provisioner": "trainkube.io/local-folder",
                    "volumeBindingMode": "Immediate",
                }
            )
        except ApiException as error:
            if error.status != 409:
                raise

    def heartbeat(self) -> None:
        now = timestamps.now()
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "the local node agent runs pods as processes",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
        self.core.patch_node_status(
            NODE,
            {
                "status": {
                    "conditions": [ready],
                    "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                    **{k: v for k, v in node_manifest()["status"].items()},
                }
            },
        )
        lease = {
            "metadata": {"name": NODE, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": NODE,
                "leaseDurationSeconds": 40,
                "renewTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            },
        }
        try:
            self.coordination.patch_namespaced_lease(NODE, "kube-node-lease", lease)
        except ApiException as error:
            if error.status != 404:
                raise
            self.coordination.create_namespaced_lease("kube-node-lease", lease)

    # -- storage ------------------------------------------------------------------------------
    def provision(self) -> None:
        for claim in self.core.list_persistent_volume_claim_for_all_namespaces().items:
            if claim.status.phase == "Bound" or claim.spec.volume_name:
                continue
            if (claim.spec.storage_class_name or STORAGE_CLASS) != STORAGE_CLASS:
                continue
            namespace, name = claim.metadata.namespace, claim.metadata.name
            folder = self.state / "volumes" / f"{namespace}-{name}"
            folder.mkdir(parents=True, exist_ok=True)
            volume = {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": f"local-{claim.metadata.uid}"},
                "spec": {
                    "capacity": {"storage": claim.spec.resources.requests["storage"]},
                    "accessModes": claim.spec.access_modes,
                    "storageClassName": STORAGE_CLASS,
                    "persistentVolumeReclaimPolicy": "Delete",
                    "hostPath": {"path": str(folder)},
                    "claimRef": {"namespace": namespace, "name": name, "uid": claim.metadata.uid},
                },
            }
            try:
                self.core.create_persistent_volume(volume)
            except ApiException as error:
                if error.status != 409:
                    raise

    def _claim_path(self, namespace: str, claim: str) -> Path:
        found = self.core.read_namespaced_persistent_volume_claim(claim, namespace)
        volume = self.core.read_persistent_volume(found.spec.volume_name)
        path = Path(volume.spec.host_path.path)
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- pods ---------------------------------------------------------------------------------
    def _pods(self) -> list[dict[str, Any]]:
        response = self.core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={NODE}", _preload_content=False
        )
        items: list[dict[str, Any]] = json.loads(response.data)["items"]
        return items

    def _volumes(self, pod: dict[str, Any], pod_dir: Path) -> dict[str, str]:
        namespace = pod["metadata"]["namespace"]
        account = self._service_account(pod, pod_dir)
        paths: dict[str, str] = {"serviceaccount": str(account)}
        for volume in pod["spec"].get("volumes") or []:
            name = volume["name"]
            target = pod_dir / "volumes" / name
            if "emptyDir" in volume:
                target.mkdir(parents=True, exist_ok=True)
            elif "configMap" in volume:
                data = (
                    self.core.read_namespaced_config_map(
                        volume["configMap"]["name"], namespace
                    ).data
                    or {}
                )
                target.mkdir(parents=True, exist_ok=True)
                for key, value in data.items():
                    (target / key).write_text(value)
            elif "secret" in volume:
                data = (
                    self.core.read_namespaced_secret(volume["secret"]["secretName"], namespace).data
                    or {}
                )
                target.mkdir(parents=True, exist_ok=True)
                items = volume["secret"].get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    (target / item["path"]).write_bytes(base64.b64decode(data.get(item["key"], "")))
            elif "persistentVolumeClaim" in volume:
                target = self._claim_path(namespace, volume["persistentVolumeClaim"]["claimName"])
            elif "hostPath" in volume:
                target = Path(volume["hostPath"]["path"])
            elif "projected" in volume:  # kube-api-access-*: token, ca.crt and namespace
                target = account
            else:
                target.mkdir(parents=True, exist_ok=True)
            paths[name] = str(target)
        return paths

    def _service_account(self, pod: dict[str, Any], pod_dir: Path) -> Path:
        folder = pod_dir / "serviceaccount"
        folder.mkdir(parents=True, exist_ok=True)
        namespace = pod["metadata"]["namespace"]
        account = pod["spec"].get("serviceAccountName") or "default"
        token = self.core.create_namespaced_service_account_token(
            account,
            namespace,
            client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])),
        ).status.token
        (folder / "token").write_text(token)
        (folder / "namespace").write_text(namespace)
        shutil.copy(default_layout().pki_dir / "ca.crt", folder / "ca.crt")
        return folder

    def _base_env(self, pod: dict[str, Any], image: str) -> dict[str, str]:
        env = {
            "PATH": f"{self.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(Path.home()),
            "HOSTNAME": pod["spec"].get("hostname") or pod["metadata"]["name"],
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(default_layout().apiserver_port),
        }
        if "trainkube" in image:
            # What the CPU-fallback image sets: no hub access, compiled ops cached.
            env.update(
                HF_HUB_OFFLINE="1",
                WANDB_MODE="offline",
                TOKENIZERS_PARALLELISM="false",
                TORCH_EXTENSIONS_DIR=str(
                    Path(
                        os.environ.get("TRAINKUBE_CACHE_DIR", Path.home() / ".cache" / "trainkube")
                    )
                    / "torch_extensions"
                ),
            )
        return env

    def _env_sources(
        self, namespace: str, container: dict[str, Any]
    ) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
        """The Secrets and ConfigMaps the container's env refers to, decoded."""
        secrets: dict[str, dict[str, str]] = {}
        config_maps: dict[str, dict[str, str]] = {}
        for item in container.get("env") or []:
            source = item.get("valueFrom") or {}
            if "secretKeyRef" in source and source["secretKeyRef"]["name"] not in secrets:
                name = source["secretKeyRef"]["name"]
                data = self.core.read_namespaced_secret(name, namespace).data or {}
                secrets[name] = {k: base64.b64decode(v).decode() for k, v in data.items()}
            if "configMapKeyRef" in source and source["configMapKeyRef"]["name"] not in config_maps:
                name = source["configMapKeyRef"]["name"]
                config_maps[name] = self.core.read_namespaced_config_map(name, namespace).data or {}
        return secrets, config_maps

    def _completions(self, pod: dict[str, Any]) -> int:
        job = (pod["metadata"].get("labels") or {}).get("batch.kubernetes.io/job-name")
        if not job:
            return 0
        try:
            return int(
                self.batch.read_namespaced_job(job, pod["metadata"]["namespace"]).spec.completions
                or 1
            )
        except ApiException:
            return 1

    def start(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        key = meta["uid"]
        pod_dir = self.state / "pods" / f"{meta['namespace']}_{meta['name']}_{key[:8]}"
        pod_dir.mkdir(parents=True, exist_ok=True)
        (pod_dir / "hosts").write_text(podplan.hosts_file(pod, self._completions(pod)))
        (pod_dir / "termination-log").write_text("")
        container = pod["spec"]["containers"][0]
        volumes = self._volumes(pod, pod_dir)
        secrets, config_maps = self._env_sources(meta["namespace"], container)
        env = podplan.environment(
            pod,
            container,
            secrets=secrets,
            config_maps=config_maps,
            base=self._base_env(pod, container.get("image", "")),
        )
        plan = podplan.plan_container(pod, container, volumes=volumes, env=env, pod_dir=pod_dir)
        spec = {
            "argv": plan.argv,
            "env": plan.env,
            "workdir": plan.workdir,
            "mounts": [
                {"source": m.source, "target": m.target, "readOnly": m.read_only}
                for m in plan.mounts
            ],
        }
        (pod_dir / "plan.json").write_text(json.dumps(spec, indent=2))
        log_file = (pod_dir / f"{container['name']}.log").open("ab")
        process = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                sys.executable,
                str(Path(__file__).with_name("sandbox.py")),
                str(pod_dir / "plan.json"),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log_file.close()
        started = timestamps.now()
        self.running[key] = Running(process, pod_dir, started)
        self._status(pod, phase="Running", state={"running": {"startedAt": started}}, ready=True)
        log.info("started %s/%s (pid %d)", meta["namespace"], meta["name"], process.pid)

    def _status(
        self, pod: dict[str, Any], *, phase: str, state: dict[str, Any], ready: bool
    ) -> None:
        container = pod["spec"]["containers"][0]
        now = timestamps.now()
        conditions = [
            {
                "type": kind,
                "status": "True" if ready or kind in ("PodScheduled", "Initialized") else "False",
                "lastTransitionTime": now,
            }
            for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ]
        status = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": now,
            "conditions": conditions,
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container.get("image", ""),
                    "imageID": "",
                    "ready": ready,
                    "started": ready,
                    "restartCount": 0,
                    "state": state,
                }
            ],
        }
        try:
            self.core.patch_namespaced_pod_status(
                pod["metadata"]["name"], pod["metadata"]["namespace"], {"status": status}
            )
        except ApiException as error:
            if error.status != 404:
                raise

    def reap(self, pods: dict[str, dict[str, Any]]) -> None:
        for key, run in list(self.running.items()):
            code = run.process.poll()
            if code is None:
                continue
            del self.running[key]
            self.finished.add(key)
            pod = pods.get(key)
            if pod is None:
                continue
            if code < 0:  # killed by a signal: what a kubelet reports as 128 + signal
                code = 128 - code
            message = (run.pod_dir / "termination-log").read_text()[-4096:]
            reason = "Completed" if code == 0 else ("OOMKilled" if code == 137 else "Error")
            terminated = {
                "exitCode": code,
                "reason": reason,
                "startedAt": run.started,
                "finishedAt": timestamps.now(),
            }
            if message:
                terminated["message"] = message
            self._status(
                pod,
                phase="Succeeded" if code == 0 else "Failed",
                state={"terminated": terminated},
                ready=False,
            )
            log.info("%s/%s exited %d", pod["metadata"]["namespace"], pod["metadata"]["name"], code)

    def stop_pod(self, pod: dict[str, Any]) -> None:
        key = pod["metadata"]["uid"]
        run = self.running.pop(key, None)
        if run is not None and run.process.poll() is None:
            try:
                os.killpg(run.process.pid, signal.SIGTERM)
                run.process.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(run.process.pid, signal.SIGKILL)
                run.process.wait()
        try:
            self.core.delete_namespaced_pod(
                pod["metadata"]["name"], pod["metadata"]["namespace"], grace_period_seconds=0
            )
        except ApiException as error:
            if error.status != 404:
                raise

    def sync(self) -> None:
        pods = {p["metadata"]["uid"]: p for p in self._pods()}
        for key, pod in pods.items():
            if pod["metadata"].get("deletionTimestamp"):
                self.stop_pod(pod)
            elif (
                key not in self.running
                and key not in self.finished
                and pod["status"].get("phase") == "Pending"
            ):
                try:
                    self.start(pod)
                except Exception as error:
                    log.exception("cannot start %s", pod["metadata"]["name"])
                    self.finished.add(key)
                    terminated = {
                        "exitCode": 128,
                        "reason": "StartError",
                        "message": str(error)[:1000],
                    }
                    self._status(pod, phase="Failed", state={"terminated": terminated}, ready=False)
        self.reap(pods)

    def shutdown(self) -> None:
        """Kill every pod process (the node goes away with its agent)."""
        for run in self.running.values():
            if run.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(run.process.pid, signal.SIGKILL)
                run.process.wait()

    def run(self) -> None:
        self.register()
        last_beat = time.monotonic()
        while True:
            try:
                self.provision()
                self.sync()
                if time.monotonic() - last_beat > 10:
                    self.heartbeat()
                    last_beat = time.monotonic()
            except ApiException as error:
                log.warning("API error: %s", error.reason)
            time.sleep(0.5)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    layout = default_layout()
    config.load_kube_config(config_file=str(layout.kubeconfig()))
    agent = Agent(
        client.ApiClient(), layout.state_dir / "agent", Path(sys.executable).parent.parent
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        agent.run()
    finally:
        agent.shutdown()


if __name__ == "__main__":
    main()
