"""The `trainkube` console command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import trainkube
from trainkube import cli


def test_version_command_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["version"]) == 0
    assert capsys.readouterr().out.startswith(f"trainkube {trainkube.__version__} ")


def test_console_script_is_installed_and_runs() -> None:
    script = Path(sys.executable).parent / "trainkube"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"trainkube {trainkube.__version__}"


def test_operator_package_does_not_pull_in_torch_or_kopf() -> None:
    code = (
        "import sys, trainkube, trainkube.cli; print(sorted({'torch','kopf'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_trainer_package_does_not_pull_in_kopf() -> None:
    code = "import sys, trainkube_trainer; print('kopf' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_plan_command_plans_every_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", "-f", str(EXAMPLES)]) == 0
    out = capsys.readouterr().out
    for name in ("tiny-pretrain", "tiny-lora", "tiny-ab", "llama-7b"):
        assert f" {name}:" in out
    assert out.count("  plan:     ZeRO stage") == 3  # the three training jobs
    assert "  why:      ZeRO-2 is what spec.parallelism asks for, and fits" in out


def test_plan_command_resolves_from_job_only_with_the_referenced_manifest(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["plan", "-f", str(EXAMPLES / "02-lora-finetune.yaml")]) == 1
    out = capsys.readouterr().out
    assert "refused:  spec.baseModel.fromJob: LLMTrainingJob 'tiny-pretrain' was not found" in out
    assert (
        cli.main(
            [
                "plan",
                "-f",
                str(EXAMPLES / "01-tiny-pretrain-cpu.yaml"),
                "-f",
                str(EXAMPLES / "02-lora-finetune.yaml"),
                "--deepspeed",
            ]
        )
        == 0
    )
    assert '"stage": 0' in capsys.readouterr().out
