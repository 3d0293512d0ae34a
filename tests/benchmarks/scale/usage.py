"""What processes used: CPU seconds of the control plane, KWOK and the operator, the
operator's resident memory, and its count of finished reconciles."""

from __future__ import annotations

import contextlib
import os
import urllib.request
from pathlib import Path

from tests.benchmarks.scale.counting import summed
from tests.cluster.conftest import OperatorProcess


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (KiB), summed over the process group `pid` leads."""
    total = {"VmRSS": 0, "VmHWM": 0}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) != pid:
                continue
            for line in (proc / "status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in total:
                    total[key] += int(value.split()[0])
    return total


CPU_OF = ("kube-apiserver", "etcd", "kube-controller", "kube-scheduler", "kwok")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(operator_pid: int | None = None) -> dict[str, float]:
    """CPU seconds used so far by the control plane's processes (by name), KWOK, and the
    process group `operator_pid` leads (as "operator")."""
    used: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            head, _, tail = (proc / "stat").read_text().rpartition(")")
            name, fields = head.partition("(")[2], tail.split()
            seconds = (int(fields[11]) + int(fields[12])) / TICKS
            if operator_pid is not None and int(fields[2]) == operator_pid:
                used["operator"] = used.get("operator", 0.0) + seconds
            elif name.startswith(CPU_OF):
                key = next(n for n in CPU_OF if name.startswith(n))
                used[key] = used.get(key, 0.0) + seconds
    return used


def cpu_between(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: round(after[name] - before.get(name, 0.0), 1) for name in sorted(after)}


def finished_reconciles(operator: OperatorProcess) -> int:
    """Reconciles the operator has finished (its trainkube_reconcile_seconds count)."""
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    return int(sum(summed(text, "trainkube_reconcile_seconds_count", lambda _: "").values()))
