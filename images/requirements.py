"""Write the pinned requirements of each image, read from pyproject.toml, one file per layer.

    python3 images/requirements.py pyproject.toml OUT_DIR

writes OUT_DIR/build.txt (the build system: setuptools, wheel), torch.txt and deepspeed.txt
(installed first and second: deepspeed's build needs torch), trainer.txt (the core and the
trainer extra without those two) and operator.txt (the core and the operator extra). The
Containerfiles copy these files, not pyproject.toml, into the layers that install them, so a
pyproject.toml change that leaves the pins alone keeps those layers cached. Standard library
only: it runs on the builder image's own Python.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from pathlib import Path

FIRST = ("torch", "deepspeed")  # each has a layer of its own, in this order


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    if match is None:
        raise SystemExit(f"cannot read a package name in {requirement!r}")
    return match.group(0).lower().replace("_", "-")


def requirement_files(pyproject: dict[str, object]) -> dict[str, list[str]]:
    project = pyproject["project"]
    build = pyproject["build-system"]
    assert isinstance(project, dict)
    assert isinstance(build, dict)
    core: list[str] = project["dependencies"]
    extras: dict[str, list[str]] = project["optional-dependencies"]
    trainer = extras["trainer"]
    first = {_name(r): r for r in trainer if _name(r) in FIRST}
    missing = [name for name in FIRST if name not in first]
    if missing:
        raise SystemExit(f"the trainer extra has no pin for {', '.join(missing)}")
    return {
        "build": list(build["requires"]),
        "torch": [first["torch"]],
        "deepspeed": [first["deepspeed"]],
        "trainer": [*core, *(r for r in trainer if _name(r) not in FIRST)],
        "operator": [*core, *extras["operator"]],
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    pyproject, out = Path(argv[0]), Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    with pyproject.open("rb") as file:
        files = requirement_files(tomllib.load(file))
    for name, lines in files.items():
        path = out / f"{name}.txt"
        path.write_text("".join(f"{line}\n" for line in lines))
        # A fixed time: the same pins are the same file, and a COPY of them stays cached.
        os.utime(path, (0, 0))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
