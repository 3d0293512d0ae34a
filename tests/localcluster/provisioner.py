"""The local cluster's volume provisioner: a folder on this machine for each claim.

For every unbound PersistentVolumeClaim of the `local` StorageClass (the default class) it
makes a folder under the state folder's `volumes/`, owned by the trainer images' user
(1000:1000), and a hostPath PersistentVolume bound to the claim, with node affinity to the
real node (`cpu-node-0`, whose kubelet mounts the folder into pods). When the claim goes, the
volume is Released: the provisioner deletes the folder and the volume (reclaim policy Delete).

    python tests/localcluster/provisioner.py --kubeconfig FILE --volumes DIR

`LocalCluster.up` starts it (log: logs/provisioner.py.log).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.localcluster.components import NODE_NAME

STORAGE_CLASS = "local"
PROVISIONER = "trainkube.io/local-folder"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
# The trainer images run as this user; the volume is theirs to write.
VOLUME_OWNER = (1000, 1000)
log = logging.getLogger("provisioner")


def storage_class() -> dict[str, Any]:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }


def rbac() -> list[dict[str, Any]]:
    """What the provisioner's identity (`trainkube:provisioner`) may do."""
    name = "trainkube:provisioner"
    rules = [
        {
            "apiGroups": [""],
            "resources": ["persistentvolumes"],
            "verbs": ["get", "list", "watch", "create", "delete"],
        },
        {
            "apiGroups": [""],
            "resources": ["persistentvolumeclaims"],
            "verbs": ["get", "list", "watch"],
        },
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    ]
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": rules,
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
            "subjects": [{"kind": "User", "name": name}],
        },
    ]


def wants_volume(claim: dict[str, Any]) -> bool:
    """An unbound claim of our class (or of none, as a default class would)."""
    spec = claim.get("spec") or {}
    if spec.get("volumeName") or (claim.get("status") or {}).get("phase") == "Bound":
        return False
    if (claim.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return (spec.get("storageClassName") or STORAGE_CLASS) == STORAGE_CLASS


def volume_name(claim: dict[str, Any]) -> str:
    return f"local-{claim['metadata']['uid']}"


def volume_folder(volumes_dir: Path, claim: dict[str, Any]) -> Path:
    meta = claim["metadata"]
    return volumes_dir / f"{meta['namespace']}-{meta['name']}-{meta['uid'][:8]}"


def volume_manifest(claim: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The hostPath volume for `claim`, bound to it, on the real node only."""
    meta, spec = claim["metadata"], claim["spec"]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": volume_name(claim), "annotations": {PROVISIONED_BY: PROVISIONER}},
        "spec": {
            "capacity": {"storage": spec["resources"]["requests"]["storage"]},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "storageClassName": STORAGE_CLASS,
            "persistentVolumeReclaimPolicy": "Delete",
            "hostPath": {"path": str(folder), "type": "Directory"},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/hostname",
                                    "operator": "In",
                                    "values": [NODE_NAME],
                                }
                            ]
                        }
                    ]
                }
            },
        },
    }


def released(volume: dict[str, Any]) -> bool:
    """One of ours whose claim is gone."""
    annotations = (volume.get("metadata") or {}).get("annotations") or {}
    phase = (volume.get("status") or {}).get("phase")
    return annotations.get(PROVISIONED_BY) == PROVISIONER and phase in ("Released", "Failed")


def make_folder(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    os.chown(folder, *VOLUME_OWNER)
    folder.chmod(0o775)


class Provisioner:
    def __init__(self, api: Any, volumes_dir: Path) -> None:
        self.core = client.CoreV1Api(api)
        self.volumes_dir = volumes_dir

    def _items(self, response: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(response.data)["items"]
        return items

    def sync(self) -> None:
        claims = self._items(
            self.core.list_persistent_volume_claim_for_all_namespaces(_preload_content=False)
        )
        volumes = self._items(self.core.list_persistent_volume(_preload_content=False))
        existing = {v["metadata"]["name"] for v in volumes}
        for claim in claims:
            if not wants_volume(claim) or volume_name(claim) in existing:
                continue
            folder = volume_folder(self.volumes_dir, claim)
            make_folder(folder)
            body: Any = volume_manifest(claim, folder)  # the client takes plain mappings
            try:
                self.core.create_persistent_volume(body)
            except ApiException as error:
                if error.status != 409:
                    raise
            log.info("provisioned %s for %s", folder, claim["metadata"]["name"])
        for volume in volumes:
            if not released(volume):
                continue
            path = Path(volume["spec"]["hostPath"]["path"])
            if path.parent == self.volumes_dir:
                shutil.rmtree(path, ignore_errors=True)
            try:
                self.core.delete_persistent_volume(volume["metadata"]["name"])
            except ApiException as error:
                if error.status != 404:
                    raise
            log.info("deleted %s and %s", volume["metadata"]["name"], path)

    def run(self) -> None:
        while True:
            try:
                self.sync()
            except (ApiException, OSError, urllib3.exceptions.HTTPError) as error:
                # The apiserver restarting (a test does that) is no reason to stop.
                log.warning("sync failed: %s", error)
            time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--volumes", type=Path, required=True, help="the volumes' folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    api = config.new_client_from_config(config_file=str(args.kubeconfig))  # type: ignore[no-untyped-call]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    Provisioner(api, args.volumes).run()


if __name__ == "__main__":
    main()
