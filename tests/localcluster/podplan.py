"""How the local CPU node agent runs one pod container: a pure function from the pod (and the
objects it references) to argv, environment and mounts.

The agent plays a kubelet for CPU pods: each container runs as a local process in a mount
namespace of its own, where the pod's volumes appear at the paths the pod spec names and
/etc/hosts resolves the pod DNS names of its Indexed Job to 127.0.0.1 (every pod shares the
host's network). Images are not pulled: a trainkube trainer image maps to this checkout's
virtualenv, which holds exactly what the CPU-fallback image installs, so what runs is the
project's own trainer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
VARIABLE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@dataclass(frozen=True)
class Mount:
    source: str  # a path on this machine
    target: str  # where the container sees it
    read_only: bool = False


@dataclass
class PodPlan:
    argv: list[str]
    env: dict[str, str]
    mounts: list[Mount] = field(default_factory=list)
    workdir: str | None = None


def _field_ref(pod: dict[str, Any], path: str) -> str:
    meta, spec = pod["metadata"], pod["spec"]
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": "127.0.0.1",
        "status.hostIP": "127.0.0.1",
    }
    if path in simple:
        return str(simple[path])
    found = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if found:
        return str((meta.get(found.group(1)) or {}).get(found.group(2), ""))
    raise ValueError(f"unsupported fieldRef {path!r}")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command, args and env values."""
    return VARIABLE.sub(lambda m: env.get(m.group(1), m.group(0)), text)


def environment(
    pod: dict[str, Any],
    container: dict[str, Any],
    *,
    secrets: dict[str, dict[str, str]],
    config_maps: dict[str, dict[str, str]],
    base: dict[str, str],
) -> dict[str, str]:
    """The container's environment: base (the node's), then the pod spec's env in order."""
    env = dict(base)
    for item in container.get("env") or []:
        name, value_from = item["name"], item.get("valueFrom")
        if value_from is None:
            env[name] = expand(str(item.get("value", "")), env)
        elif "fieldRef" in value_from:
            env[name] = _field_ref(pod, value_from["fieldRef"]["fieldPath"])
        elif "secretKeyRef" in value_from:
            ref = value_from["secretKeyRef"]
            env[name] = secrets.get(ref["name"], {}).get(ref["key"], "")
        elif "configMapKeyRef" in value_from:
            ref = value_from["configMapKeyRef"]
            env[name] = config_maps.get(ref["name"], {}).get(ref["key"], "")
    return env


def hosts_file(pod: dict[str, Any], completions: int) -> str:
    """/etc/hosts for the pod: its Indexed Job's pod names (<job>-<i>.<subdomain>) on loopback."""
    lines = ["127.0.0.1 localhost"]
    spec, namespace = pod["spec"], pod["metadata"]["namespace"]
    subdomain = spec.get("subdomain")
    job = (pod["metadata"].get("labels") or {}).get("batch.kubernetes.io/job-name")
    if subdomain and job:
        for index in range(completions):
            host = f"{job}-{index}"
            names = [
                f"{host}.{subdomain}",
                f"{host}.{subdomain}.{namespace}.svc",
                f"{host}.{subdomain}.{namespace}.svc.cluster.local",
                host,
            ]
            lines.append("127.0.0.1 " + " ".join(names))
    return "\n".join(lines) + "\n"


def plan_container(
    pod: dict[str, Any],
    container: dict[str, Any],
    *,
    volumes: dict[str, str],
    env: dict[str, str],
    pod_dir: Path,
) -> PodPlan:
    """argv, env and mounts of one container; `volumes` maps volume names to host paths."""
    command = [expand(part, env) for part in container.get("command") or []]
    args = [expand(part, env) for part in container.get("args") or []]
    mounts = [
        Mount(str(pod_dir / "hosts"), "/etc/hosts", read_only=True),
        Mount(str(pod_dir / "termination-log"), "/dev/termination-log"),
    ]
    if "serviceaccount" in volumes:
        mounts.append(Mount(volumes["serviceaccount"], SERVICE_ACCOUNT_DIR, read_only=True))
    for mount in container.get("volumeMounts") or []:
        source = Path(volumes[mount["name"]])
        if mount.get("subPath"):
            source = source / mount["subPath"]
        mounts.append(Mount(str(source), mount["mountPath"], bool(mount.get("readOnly"))))
    return PodPlan(argv=command + args, env=env, mounts=mounts, workdir=container.get("workingDir"))
