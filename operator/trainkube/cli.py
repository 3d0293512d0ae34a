"""The `trainkube` command: what a user can do from a shell without the operator running."""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

from trainkube import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="trainkube",
        description="trainkube runs LLM training, fine-tuning and evaluation on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"trainkube {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("version", help="print the trainkube and Python versions")
    crds = sub.add_parser("crds", help="write the CRDs generated from the API models")
    crds.add_argument("--output-dir", type=Path, default=Path("crds"), help="default: crds/")
    crds.add_argument(
        "--check", action="store_true", help="write nothing; fail if the files are stale"
    )
    plan = sub.add_parser("plan", help="print the ZeRO/offload plan of job manifests, and why")
    plan.add_argument(
        "-f",
        "--filename",
        type=Path,
        action="append",
        required=True,
        help="a manifest or a folder of them; repeat to resolve fromJob references",
    )
    plan.add_argument("--deepspeed", action="store_true", help="also print the DeepSpeed config")
    operator = sub.add_parser("operator", help="run the operator against the current kubeconfig")
    operator.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable); all namespaces when not given",
    )
    operator.add_argument(
        "--liveness", default="http://0.0.0.0:8080/healthz", help="health endpoint to serve"
    )
    operator.add_argument(
        "--metrics-port", type=int, default=9090, help="Prometheus /metrics port (0: none)"
    )
    args = parser.parse_args(argv)

    if args.command == "operator":
        return _operator(args.namespace, args.liveness, args.metrics_port)
    if args.command == "plan":
        return _plan(args.filename, deepspeed=args.deepspeed)
    if args.command == "crds":
        return _crds(args.output_dir, check=args.check)

    if args.command == "version":
        print(f"trainkube {__version__} (Python {platform.python_version()})")
    return 0


def _crds(directory: Path, *, check: bool) -> int:
    from trainkube.api import crd  # noqa: PLC0415 - only this command needs the generator

    if check:
        stale = crd.stale_files(directory)
        for name in stale:
            print(f"{directory / name} is stale: run `trainkube crds --output-dir {directory}`")
        return 1 if stale else 0
    for path in crd.write_crds(directory):
        print(f"wrote {path}")
    return 0


def _operator(namespaces: list[str], liveness: str, metrics_port: int) -> int:
    import kopf  # noqa: PLC0415 - the operator extra

    from trainkube.controller import handlers  # noqa: PLC0415 - registers the handlers

    lost = handlers.configure_scope(namespaces, metrics_port=metrics_port)
    kopf.run(
        standalone=True,
        namespaces=namespaces,
        clusterwide=not namespaces,
        liveness_endpoint=liveness,
        stop_flag=lost,
    )
    if lost.is_set():
        print("trainkube operator: leadership lost", file=sys.stderr)
        return 1
    return 0


def _plan(paths: list[Path], *, deepspeed: bool) -> int:
    from trainkube.planner.plan import PlanError  # noqa: PLC0415
    from trainkube.planner.report import report  # noqa: PLC0415

    try:
        text, ok = report(paths, deepspeed=deepspeed)
    except (PlanError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
