"""The container images (images/), run with podman: who they run as, what they hold, their
labels, and a real two-rank training run in the CPU trainer with a read-only root filesystem.

The images are built through images/build.sh once per session when missing (minutes cold,
about 6 GB of disk for the trainer); built ones are used as they are. Marked `images`.
"""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.runs import pretrain_config
from trainkube.exitcodes import ExitCode

# A cold build takes longer than the suite's default 600 s per test.
pytestmark = [pytest.mark.images, pytest.mark.timeout(3600)]

REPO = Path(__file__).resolve().parents[2]
PODMAN = str(REPO / "images" / "podman.sh")
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
OPERATOR = f"ghcr.io/trainkube/operator:{VERSION}"
TRAINER_CPU = f"ghcr.io/trainkube/trainer-cpu:{VERSION}"
TRAINER_CUDA = f"ghcr.io/trainkube/trainer:{VERSION}"
BUILT = {"operator": OPERATOR, "trainer-cpu": TRAINER_CPU}
LABELS = ("title", "description", "version", "source", "licenses")


def podman(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def ok(*args: str, timeout: float = 300) -> str:
    """podman's stdout; the test fails with its output when it exits non-zero."""
    done = podman(*args, timeout=timeout)
    assert done.returncode == 0, f"podman {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    """The operator and CPU trainer images, built by images/build.sh unless they exist."""
    missing = [name for name, tag in BUILT.items() if podman("image", "exists", tag).returncode]
    if missing:
        subprocess.run(
            ["bash", str(REPO / "images" / "build.sh"), *missing],
            stdout=subprocess.DEVNULL,
            check=True,
            timeout=3000,
        )
    return BUILT


def inspect(image: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = json.loads(ok("image", "inspect", image))
    return found[0]


@pytest.mark.parametrize("name", sorted(BUILT))
def test_an_image_runs_as_a_fixed_non_root_user_and_has_its_labels(
    images: dict[str, str], name: str
) -> None:
    config = inspect(images[name])["Config"]
    # Numeric, so that a pod's runAsNonRoot can check it without reading /etc/passwd.
    assert config["User"] == "1000:1000"
    labels = config["Labels"]
    for label in LABELS:
        assert labels.get(f"org.opencontainers.image.{label}"), label
    assert labels["org.opencontainers.image.version"] == VERSION
    uid = ok("run", "--rm", "--entrypoint", "id", images[name], "-u").strip()
    assert uid == "1000"


def test_the_trainer_has_deepspeed_with_its_prebuilt_shm_comm_op_and_no_kopf(
    images: dict[str, str],
) -> None:
    check = (
        "import importlib.util, deepspeed, torch\n"
        "from deepspeed.git_version_info import installed_ops as o\n"
        "assert o['deepspeed_shm_comm'], o\n"
        "assert importlib.util.find_spec('kopf') is None\n"
        "print('ok', torch.__version__, deepspeed.__version__)\n"
    )
    out = ok("run", "--rm", images["trainer-cpu"], "python", "-c", check)
    assert out.splitlines()[-1].startswith("ok "), out  # DeepSpeed logs to stdout too


def test_the_cuda_trainer_has_its_prebuilt_fused_adam_op() -> None:
    """Only where that image was built (`make images IMAGES=trainer-cuda`): the op loads on
    the CPU too, since loading it needs the CUDA libraries, not a GPU."""
    if podman("image", "exists", TRAINER_CUDA).returncode:
        pytest.skip(f"{TRAINER_CUDA} is not built here")
    check = (
        "import deepspeed.ops.adam.fused_adam_op as op\n"
        "from deepspeed.git_version_info import installed_ops as o, accelerator_name\n"
        "assert o['fused_adam'] and accelerator_name == 'cuda', (o, accelerator_name)\n"
        "print('ok', op.multi_tensor_adam.__name__)\n"
    )
    out = ok("run", "--rm", TRAINER_CUDA, "python", "-c", check)
    assert out.splitlines()[-1] == "ok multi_tensor_adam", out
    assert inspect(TRAINER_CUDA)["Config"]["User"] == "1000:1000"


def test_the_trainer_has_the_commands_the_operator_starts(images: dict[str, str]) -> None:
    assert "usage: deepspeed" in ok("run", "--rm", images["trainer-cpu"], "deepspeed", "--help")
    usage = ok("run", "--rm", images["trainer-cpu"], "python", "-m", "trainkube_trainer", "--help")
    assert "--config" in usage


def test_the_operator_has_its_command_and_no_torch(images: dict[str, str]) -> None:
    assert "operator" in ok("run", "--rm", images["operator"], "--help")
    check = (
        "import importlib.util as u; "
        "assert u.find_spec('torch') is None and u.find_spec('kopf') is not None"
    )
    ok("run", "--rm", "--entrypoint", "python", images["operator"], "-c", check)


def test_the_cpu_trainer_trains_as_the_operator_starts_it_with_a_read_only_root(
    images: dict[str, str], tmp_path: Path
) -> None:
    """Two ranks on one node through the deepspeed launcher without ssh, as a worker pod runs
    them; everything the image writes goes to /tmp (podman's --read-only mounts a tmpfs there),
    the job's files to the mounted folder, and shm_comm's segments to a /dev/shm big enough."""
    tmp_path.chmod(0o777)  # the image's user writes here
    config = pretrain_config(Path("/work"), stage=2, ranks=2, steps=10, interval=10)
    (tmp_path / "run.json").write_text(config.dump())
    (tmp_path / "hostfile").write_text("localhost slots=2\n")
    run = [
        "run", "--rm", "--read-only", "--shm-size=1g", "--network=none",
        "--volume", f"{tmp_path}:/work",
        "--env", "OMP_NUM_THREADS=1", "--env", "HF_HUB_OFFLINE=1", "--env", "WANDB_MODE=offline",
        images["trainer-cpu"],
        "deepspeed", "--hostfile=/work/hostfile", "--no_ssh", "--node_rank=0",
        "--master_addr=127.0.0.1", "--master_port=29500",
        "--module", "trainkube_trainer", "--config", "/work/run.json",
    ]  # fmt: skip
    done = podman(*run, timeout=600)
    log = done.stdout + done.stderr
    assert done.returncode == ExitCode.SUCCESS, log[-3000:]
    assert '"world_size": 2' in log
    result = json.loads((tmp_path / "report" / "result.json").read_text())
    assert result["outcome"] == "succeeded"
    assert result["step"] == 10
    assert (tmp_path / "ckpt" / "step-10" / "manifest.json").exists()
