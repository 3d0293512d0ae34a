"""The `trainkube` command: what a user can do from a shell without the operator running."""

from __future__ import annotations

import argparse
import platform
import sys

from trainkube import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="trainkube",
        description="trainkube runs LLM training, fine-tuning and evaluation on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"trainkube {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("version", help="print the trainkube and Python versions")
    args = parser.parse_args(argv)

    if args.command == "version":
        print(f"trainkube {__version__} (Python {platform.python_version()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
