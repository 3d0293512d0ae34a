"""trainkube's images in the kind nodes, from the archives images/build.sh writes.

`kind load image-archive` keeps each image twice in every node: the layers in containerd's
content store and their unpacked snapshot. The trainer image is 5.85 GB, so that would be
about 23 GB for two workers. Imported here with `ctr images import --discard-unpacked-layers`,
the layers go once unpacked, so each worker holds about the image's size in the end. While
an import runs, though, a node holds both copies; so the nodes are loaded one after the
other, and the disk must hold every worker's copy plus one more. Only the workers get the
images: the control plane is tainted against trainkube's pods.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.kind.cluster import KindCluster, KindError
from tests.kind.settings import REPO_ROOT

IMPORT = ["ctr", "--namespace=k8s.io", "images", "import", "--local", "--discard-unpacked-layers"]


@dataclass(frozen=True)
class Loaded:
    node: str
    archive: Path
    seconds: float


def build_images(images: str = "operator trainer-cpu") -> list[Path]:
    """images/build.sh (cached): the archives of the operator and the CPU trainer."""
    result = subprocess.run(
        ["bash", "images/build.sh", *images.split()],
        stdout=subprocess.PIPE,
        stderr=sys.stderr,
        text=True,
        check=False,
        cwd=REPO_ROOT,
    )
    if result.returncode != 0:
        raise KindError("images/build.sh failed (see its output above)")
    return [Path(line) for line in result.stdout.splitlines() if line.strip()]


def check_disk(archives: list[Path], workers: int, storage: Path) -> None:
    """Refuse, before creating anything, when the runtime's storage cannot hold the images
    in every worker, the second copy the last import holds while it unpacks, and the nodes
    themselves (about 3 GB)."""
    needed = (workers + 1) * sum(a.stat().st_size for a in archives) + 3 * 2**30
    while not storage.exists():  # rootless or elsewhere: the file system above it
        storage = storage.parent
    free = shutil.disk_usage(storage).free
    if free < needed:
        raise KindError(
            f"{storage} has {free / 2**30:.1f} GiB free; the cluster with its images needs "
            f"about {needed / 2**30:.1f} GiB"
        )


def load_one(cluster: KindCluster, node: str, archive: Path) -> Loaded:
    start = time.monotonic()
    with archive.open("rb") as stream:
        result = subprocess.run(
            [cluster.settings.runtime, "exec", "-i", node, *IMPORT, "-"],
            stdin=stream,
            capture_output=True,
            env=cluster.settings.env(),
            check=False,
        )
    if result.returncode != 0:
        raise KindError(f"loading {archive} into {node} failed: {result.stderr.decode()[-800:]}")
    return Loaded(node, archive, time.monotonic() - start)


def load(cluster: KindCluster, archives: list[Path], nodes: list[str]) -> list[Loaded]:
    """Load every archive into every node, one import at a time: two at once would need
    both nodes' packed and unpacked copies on disk together (the cause of a "no space left
    on device" with 17 GB free)."""
    return [load_one(cluster, node, archive) for node in nodes for archive in archives]
