"""`python -m tests.kind up|demo|down|env`: trainkube on a kind cluster (`make kind-demo`,
`make kind-down`; tests/kind/__init__.py says what it is)."""

from __future__ import annotations

import argparse
import sys
import time

from tests.kind import demo, lifecycle, settings
from tests.kind.cluster import KindError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.kind", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "up", help="create the cluster (or reuse it), load the images, install the chart"
    )
    sub.add_parser("demo", help="up, then the examples' chain across the two workers")
    sub.add_parser("down", help="delete the cluster and everything it left on this machine")
    sub.add_parser("env", help="print the export that points kubectl at the cluster")
    args = parser.parse_args(argv)
    chosen = settings.from_environment()
    if args.command == "env":
        print(f"export KUBECONFIG={chosen.kubeconfig}")
        return 0
    start = time.monotonic()
    try:
        if args.command == "down":
            left = lifecycle.down(chosen)
            print(f"kind cluster {chosen.name} deleted in {time.monotonic() - start:.0f} s")
            for thing in left:
                print(f"left behind: {thing}", file=sys.stderr)
            return 1 if left else 0
        cluster = lifecycle.up(chosen)
        if args.command == "demo":
            outcome = demo.run(cluster)
            if set(outcome.phases.values()) != {"Succeeded"}:
                print(f"error: {outcome.phases}", file=sys.stderr)
                return 1
    except KindError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"\n{args.command} took {time.monotonic() - start:.0f} s; kubectl: "
        f"export KUBECONFIG={chosen.kubeconfig}; remove it all: make kind-down"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
