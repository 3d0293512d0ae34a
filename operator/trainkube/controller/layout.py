"""Where things are inside a worker pod: one place, used by the run-config builder and the pod
builder alike, so the paths in the run config always match the mounts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

RUN_CONFIG_DIR = "/etc/trainkube"
RUN_CONFIG_FILE = f"{RUN_CONFIG_DIR}/run.json"
CHECKPOINTS = "/checkpoints"
OUTPUT = "/output"
REPORT_DIR = "/var/run/trainkube"
DATA_ROOT = "/data"
MODELS_ROOT = "/models"
SECRETS_ROOT = "/var/run/secrets/trainkube"
SHM = "/dev/shm"


@dataclass(frozen=True)
class ClaimMount:
    """A PersistentVolumeClaim mounted into the worker container."""

    claim: str
    mount_path: str
    read_only: bool

    @property
    def volume_name(self) -> str:
        return f"claim-{self.claim}"[:63].rstrip("-")


def data_path(claim: str, path: str) -> str:
    return str(PurePosixPath(DATA_ROOT) / claim / path)


def model_path(claim: str, path: str) -> str:
    return str(PurePosixPath(MODELS_ROOT) / claim / path)


def secret_file(secret: str, key: str) -> str:
    return str(PurePosixPath(SECRETS_ROOT) / secret / key)


def split_location(location: str) -> tuple[str, str]:
    """'claim:path' (how status.output names a place) as (claim, path)."""
    claim, _, path = location.partition(":")
    return claim, path
