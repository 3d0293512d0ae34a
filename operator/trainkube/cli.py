"""The `trainkube` command: what a user can do from a shell without the operator running."""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path
from typing import Any

from trainkube import __version__

# The operator's apiserver requests a second once its burst is spent (clients.TokenBucket); 0:
# no limit, the default: on the 2-core benchmark a limit of 100/s made 500 new jobs' workers
# later (the operator itself became the bottleneck) and 150/s did not make them sooner.
API_QPS = 0.0
API_BURST = 200


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
    _prepare_parser(sub)
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
    operator.add_argument(
        "--api-qps",
        type=float,
        default=API_QPS,
        help=f"apiserver requests a second, after the burst (0: no limit; default {API_QPS:g})",
    )
    operator.add_argument("--api-burst", type=int, default=API_BURST, help=f"default {API_BURST}")
    args = parser.parse_args(argv)

    if args.command == "operator":
        return _operator(args)
    if args.command == "plan":
        return _plan(args.filename, deepspeed=args.deepspeed)
    if args.command == "crds":
        return _crds(args.output_dir, check=args.check)
    if args.command == "prepare":
        return _prepare(args)

    if args.command == "version":
        print(f"trainkube {__version__} (Python {platform.python_version()})")
    return 0


def _prepare_parser(sub: Any) -> None:
    prepare = sub.add_parser(
        "prepare",
        help="tokenize a corpus into token shards a job reads with data.files.format tokens",
        description="Tokenize jsonl, text or parquet files, a hub dataset or a built-in corpus "
        "into memory-mapped token shards with an index, in OUTPUT. Run it where the data "
        "volume is mounted (a Kubernetes Job with the trainer image, which has the packages it "
        "needs), with the tokenizer the job's model uses; then point the job's data.files at "
        "OUTPUT with format tokens.",
    )
    source = prepare.add_mutually_exclusive_group(required=True)
    source.add_argument("--files", help="a file or a folder of files (with --format)")
    source.add_argument("--hub-dataset", metavar="ID", help="a Hugging Face Hub dataset id")
    source.add_argument("--builtin", help="a built-in corpus: tiny-stories, tiny-instructions")
    prepare.add_argument("--format", choices=["jsonl", "text", "parquet"], help="of --files")
    prepare.add_argument("--hub-config", help="the hub dataset's configuration (subset)")
    prepare.add_argument("--hub-split", default="train", help="default: train")
    prepare.add_argument("--hub-revision", default="main", help="default: main")
    prepare.add_argument(
        "--tokenizer",
        help="a hub id, or a folder (save_pretrained) or tokenizer.json on disk; default: the "
        "byte-level tokenizer of models built from an architecture",
    )
    prepare.add_argument("--tokenizer-revision", default="main", help="of a hub tokenizer")
    prepare.add_argument("--token-file", help="a file holding a Hugging Face token")
    prepare.add_argument("--text-field", default="text", help="default: text")
    prepare.add_argument("--prompt-field", help="prompt/response data: the prompt's field")
    prepare.add_argument("--response-field", help="prompt/response data: the response's field")
    prepare.add_argument(
        "--shard-tokens", type=int, default=1 << 28, help="tokens per shard (default 2^28)"
    )
    prepare.add_argument("--output", type=Path, required=True, help="the folder to write")


def _prepare(args: argparse.Namespace) -> int:
    try:
        from trainkube_trainer.data.prepare import run_cli  # noqa: PLC0415 - trainer packages
    except ImportError as missing:
        print(
            f"error: trainkube prepare needs the trainer's packages ({missing.name} is missing): "
            "pip install 'trainkube[trainer]', or run it in the trainer image",
            file=sys.stderr,
        )
        return 2
    return run_cli(args)


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


def _operator(args: argparse.Namespace) -> int:
    import kopf  # noqa: PLC0415 - the operator extra

    from trainkube.controller import handlers  # noqa: PLC0415 - registers the handlers

    namespaces: list[str] = args.namespace
    lost = handlers.configure_scope(
        namespaces, metrics_port=args.metrics_port, api_qps=args.api_qps, api_burst=args.api_burst
    )
    kopf.run(
        standalone=True,
        namespaces=namespaces,
        clusterwide=not namespaces,
        liveness_endpoint=args.liveness,
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
