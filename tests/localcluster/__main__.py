"""`python -m tests.localcluster up|down|status|env`: the local cluster by hand."""

from __future__ import annotations

import argparse
import sys
import time

from tests.localcluster import cluster, demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.localcluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "up", help="build what is missing, start the control plane, the CPU node and GPU nodes"
    )
    sub.add_parser(
        "down", help="stop every process of the cluster, undo its host changes, delete its state"
    )
    sub.add_parser("status", help="say whether the cluster is up, and where its files are")
    sub.add_parser("env", help="print the shell exports that point kubectl at the cluster")
    sub.add_parser("demo", help="the whole chain on the local cluster (make demo)")
    logs = sub.add_parser("logs", help="print a pod's log (kubectl logs, from the kubelet)")
    logs.add_argument("pod", help="NAMESPACE/POD")
    args = parser.parse_args(argv)

    layout = cluster.default_layout()
    if args.command == "down":
        stopped = cluster.down(layout)
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}; removed {layout.state_dir}")
        return 0

    local = cluster.LocalCluster.prepare(layout)
    exports = f"export KUBECONFIG={local.kubeconfig}\nexport PATH={local.bin_dir}:$PATH"
    if args.command == "env":
        print(exports)
        return 0
    if args.command == "demo":
        try:
            demo.run(local)
        except cluster.ClusterError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        return 0
    if args.command == "logs":
        namespace, _, pod = args.pod.rpartition("/")
        try:
            print(
                local.kubectl("logs", "-n", namespace or "default", pod, "--all-containers"),
                end="",
            )
        except cluster.ClusterError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        return 0
    if args.command == "status":
        up = local.is_up()
        print(f"local cluster at {layout.server_url}: {'up' if up else 'down'}")
        if up:
            print(local.kubectl("get", "nodes", "-o", "wide"))
        return 0 if up else 1

    start = time.monotonic()
    try:
        started = local.up()
    except cluster.ClusterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    verb = "started" if started else "already up, reused"
    print(f"local cluster {verb} in {time.monotonic() - start:.1f} s at {layout.server_url}")
    if local.timings:
        print("  " + ", ".join(f"{stage} {s:.1f} s" for stage, s in local.timings.items()))
    print(local.kubectl("get", "nodes", "-L", "nvidia.com/gpu.product"))
    print("point kubectl at it with:\n" + exports)
    return 0


if __name__ == "__main__":
    sys.exit(main())
