"""Runs inside `unshare --mount`: bind-mounts a pod's volumes where the pod spec says, then
execs the container's command. Started by the node agent; not for use by hand.

    unshare --mount --propagation private python sandbox.py plan.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def main() -> None:
    plan = json.loads(Path(sys.argv[1]).read_text())
    for mount in plan["mounts"]:
        source, target = Path(mount["source"]), Path(mount["target"])
        if not source.exists():  # a subPath that does not exist yet: a kubelet creates it
            source.mkdir(parents=True)
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch(exist_ok=True)
        subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
        if mount["readOnly"]:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True)
    if plan.get("workdir"):
        os.chdir(plan["workdir"])
    argv = plan["argv"]
    os.execvpe(argv[0], argv, plan["env"])


if __name__ == "__main__":
    main()
