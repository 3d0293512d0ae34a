"""Image archives without a registry or an image builder: write small OCI archives, read any.

`write_archive` makes an OCI image-layout tarball of a few files (a static program is a whole
image): the node's sandbox ("pause") image and the tests' probe image are made this way, then
imported into the node's containerd (`realnode.import_images`). `archive_images` reads what an
archive holds (OCI layout, or the docker-archive `podman save` writes): each image's name and
the digest of its config, which identifies it across both formats and registries.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
NAME_ANNOTATION = "io.containerd.image.name"
REF_ANNOTATION = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class ArchivedImage:
    """One image of an archive: its full name (`registry/repository:tag`) and config digest."""

    name: str
    config_digest: str


def normalize(reference: str) -> str:
    """An image reference as containerd stores it: `busybox:1` is `docker.io/library/busybox:1`,
    a name without a tag gets `:latest`."""
    first, _, rest = reference.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        reference = f"docker.io/{reference}"
        if not rest:
            reference = f"docker.io/library/{first}"
    last = reference.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        reference += ":latest"
    return reference


def _digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _layer(files: dict[str, tuple[bytes, int]]) -> bytes:
    """An uncompressed, reproducible layer tarball of `files` (path -> content, mode)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        folders = sorted({str(Path(p).parent) for p in files} - {"."})
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for path, (content, mode) in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(content), mode
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def write_archive(
    path: Path,
    *,
    name: str,
    files: dict[str, tuple[bytes, int]],
    entrypoint: list[str],
    user: str = "",
) -> ArchivedImage:
    """Write an OCI archive of one linux/amd64 image called `name` whose single layer holds
    `files` (path in the image -> content, mode); the same inputs give the same bytes."""
    layer = _layer(files)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": entrypoint, "User": user, "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": _digest(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": _digest(layer), "size": len(layer)}],
        },
        sort_keys=True,
    ).encode()
    full_name = normalize(name)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": _digest(manifest),
                    "size": len(manifest),
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        NAME_ANNOTATION: full_name,
                        REF_ANNOTATION: full_name.rsplit(":", 1)[1],
                    },
                }
            ],
        },
        sort_keys=True,
    ).encode()
    entries = {
        "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
        "index.json": index,
        **{
            f"blobs/sha256/{_digest(blob).split(':')[1]}": blob
            for blob in (layer, config, manifest)
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with tarfile.open(partial, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry, content in entries.items():
            info = tarfile.TarInfo(entry)
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))
    partial.replace(path)
    return ArchivedImage(full_name, _digest(config))


def _read(tar: tarfile.TarFile, member: str) -> bytes:
    """A file of the archive, whether its names start with "./" or not."""
    member = member.removeprefix("./")
    names = set(tar.getnames())
    handle = tar.extractfile(member if member in names else f"./{member}")
    if handle is None:
        raise ValueError(f"{member} is not a file")
    return handle.read()


def _oci_config_digest(tar: tarfile.TarFile, descriptor: dict[str, Any]) -> str:
    """The config digest of a manifest, or of an index's linux/amd64 manifest."""
    blob = json.loads(_read(tar, f"blobs/{descriptor['digest'].replace(':', '/')}"))
    if "manifests" in blob:
        chosen = next(
            (
                m
                for m in blob["manifests"]
                if (m.get("platform") or {}).get("architecture") in (None, "amd64")
            ),
            None,
        )
        if chosen is None:
            raise ValueError(f"no linux/amd64 image in {descriptor['digest']}")
        return _oci_config_digest(tar, chosen)
    return str(blob["config"]["digest"])


def archive_images(path: Path) -> list[ArchivedImage]:
    """The named images an archive holds (docker-archive or OCI layout)."""
    with tarfile.open(path) as tar:
        names = {member.removeprefix("./") for member in tar.getnames()}
        if "manifest.json" in names:  # docker-archive: RepoTags and a config file per image
            images = []
            for entry in json.loads(_read(tar, "manifest.json")):
                digest = _digest(_read(tar, entry["Config"]))
                images += [ArchivedImage(normalize(t), digest) for t in entry.get("RepoTags") or []]
            return images
        if "index.json" not in names:
            raise ValueError(f"{path} is neither an OCI nor a docker archive")
        images = []
        for descriptor in json.loads(_read(tar, "index.json"))["manifests"]:
            annotations = descriptor.get("annotations") or {}
            name = annotations.get(NAME_ANNOTATION) or annotations.get(REF_ANNOTATION)
            if name:
                images.append(ArchivedImage(normalize(name), _oci_config_digest(tar, descriptor)))
        return images
