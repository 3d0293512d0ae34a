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
