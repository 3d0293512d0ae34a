"""Claims on the kind cluster: a folder of this machine for each, seen by every node.

kind's own provisioner (local-path) is an image from a registry, and its volumes live on one
node, while a 2-node training job's workers share their checkpoint claim. Here every node has
the same folder of this machine mounted at the same path (`kindconfig`), and this provisioner,
the local cluster's (tests/localcluster/provisioner.py: the `local` StorageClass, made the
default, a folder per claim owned by the images' uid 1000, deleted with the claim) without its
node affinity, gives each claim a hostPath volume in that folder: any node may mount it, all
see the same files, as with a shared file system. It runs on this machine, started by `up`
and stopped by `down`:

    python -m tests.kind.volumes --kubeconfig FILE --volumes DIR
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from kubernetes import config

from tests.localcluster import provisioner as local


class AnyNode:
    """The API the local provisioner writes through, with its volumes' node affinity left out:
    every node has the folder."""

    def __init__(self, core: Any) -> None:
        self._core = core

    def __getattr__(self, name: str) -> Any:
        return getattr(self._core, name)

    def create_persistent_volume(self, body: dict[str, Any], **kwargs: Any) -> Any:
        spec = {k: v for k, v in body["spec"].items() if k != "nodeAffinity"}
        return self._core.create_persistent_volume({**body, "spec": spec}, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--volumes", type=Path, required=True, help="the volumes' folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    api = config.new_client_from_config(config_file=str(args.kubeconfig))  # type: ignore[no-untyped-call]
    provisioner = local.Provisioner(api, args.volumes)
    provisioner.core = AnyNode(provisioner.core)  # type: ignore[assignment]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    provisioner.run()


if __name__ == "__main__":
    main()
