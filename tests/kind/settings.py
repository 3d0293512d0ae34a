"""Which container runtime and node image the kind cluster uses, and where its files live.

KIND_EXPERIMENTAL_PROVIDER   kind's own: `podman` or `docker`; unset, docker when its CLI
                             is installed, else podman
TRAINKUBE_KIND_NODE_IMAGE    `published` (kind's own node image, pulled from its registry),
                             `local` (built here by build-node-image.sh) or an image name;
                             unset, `published` with docker and `local` with podman
TRAINKUBE_CACHE_DIR          the cache (~/.cache/trainkube); the cluster's run-time files
                             (kubeconfig, logs, volumes, the host record) go to kind/run
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
USER_CONFIG = REPO_ROOT / "kind-config.yaml"
PUBLISHED = "published"
LOCAL = "local"


@dataclass(frozen=True)
class Settings:
    runtime: str  # podman or docker: the CLI kind drives, and the one we exec into nodes with
    node_image: str  # PUBLISHED, LOCAL or an image name
    cache_dir: Path
    name: str  # the cluster's name, from kind-config.yaml

    @property
    def run_dir(self) -> Path:
        return self.cache_dir / "kind" / "run"

    @property
    def kubeconfig(self) -> Path:
        return self.run_dir / "kubeconfig"

    @property
    def volumes_dir(self) -> Path:
        """The claims' folders: the same path on this machine and inside every node."""
        return self.run_dir / "volumes"

    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def bin_dir(self) -> Path:
        return self.cache_dir / "bin"

    def env(self) -> dict[str, str]:
        """The environment for kind and the runtime's CLI."""
        env = dict(os.environ, KIND_EXPERIMENTAL_PROVIDER=self.runtime)
        if self.runtime == "podman":
            # images/podman.sh's settings for this VM (runc, cgroupfs, ulimits it can grant).
            env["CONTAINERS_CONF"] = str(self.cache_dir / "images" / "containers.conf")
        return env


def cluster_name(config_file: Path = USER_CONFIG) -> str:
    return str(yaml.safe_load(config_file.read_text()).get("name") or "kind")


def docker_runs() -> bool:
    """A docker CLI with a daemon that answers (a CLI alone is not enough)."""
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def from_environment(env: Mapping[str, str] = os.environ) -> Settings:
    runtime = env.get("KIND_EXPERIMENTAL_PROVIDER") or ("docker" if docker_runs() else "podman")
    if runtime not in ("podman", "docker"):
        raise ValueError(f"KIND_EXPERIMENTAL_PROVIDER={runtime}: podman or docker")
    node_image = env.get("TRAINKUBE_KIND_NODE_IMAGE") or (
        PUBLISHED if runtime == "docker" else LOCAL
    )
    cache = Path(env.get("TRAINKUBE_CACHE_DIR") or Path.home() / ".cache" / "trainkube")
    return Settings(runtime=runtime, node_image=node_image, cache_dir=cache, name=cluster_name())
