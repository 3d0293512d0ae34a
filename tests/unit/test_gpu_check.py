"""The GPU check script (tests/gpu/check_gpu.py) on a machine without a GPU: it imports, parses
its arguments, plans and configures every configuration, and exits saying there is no GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.gpu import check_gpu, check_trainer
from trainkube.api.training import Precision
from trainkube.planner.memory import GiB
from trainkube.planner.plan import CONTEXT_BYTES


def test_gpu_check_plans_every_configuration_as_asked_in_bf16_for_a_100m_model(
    tmp_path: Path,
) -> None:
    args = check_gpu.parse_args([])
    assert args.configs == [c.name for c in check_gpu.CONFIGURATIONS]
    assert {c.stage for c in check_gpu.CONFIGURATIONS} == {2, 3}
    assert len(check_gpu.CONFIGURATIONS) >= 4
    for configuration in check_gpu.CONFIGURATIONS:
        chosen = check_gpu.planned(configuration, gpu_memory=80 * GiB)
        assert 90e6 < chosen.parameters < 130e6
        assert chosen.rung.stage == configuration.stage
        assert chosen.micro_batch_size == configuration.micro_batch
        assert chosen.activation_checkpointing == configuration.checkpointing
        assert chosen.gpu_total > CONTEXT_BYTES
        config = check_gpu.run_config(
            configuration, chosen, steps=args.steps, fused_adam=False, root=tmp_path
        )
        assert config.plan is not None
        assert config.plan.deepspeed["bf16"] == {"enabled": True}
        assert config.plan.deepspeed["optimizer"]["params"]["torch_adam"] is True
        assert "torch_adam" not in chosen.deepspeed_config["optimizer"]["params"]


def test_gpu_check_refuses_a_warmup_that_leaves_no_step_to_time() -> None:
    with pytest.raises(SystemExit):
        check_gpu.parse_args(["--steps", "5", "--warmup", "5"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a CPU machine gets")
def test_gpu_check_exits_with_status_2_saying_there_is_no_gpu(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert check_gpu.main(["--steps", "3", "--warmup", "1"]) == 2
    assert "no CUDA GPU is visible" in capsys.readouterr().err


def test_arch_list_without_variants_builds_9_0a_as_9_0_and_keeps_ptx_and_order() -> None:
    assert check_gpu.without_variants("9.0a") == "9.0"
    assert check_gpu.without_variants("8.0;9.0a;9.0;10.0a+PTX") == "8.0;9.0;10.0+PTX"
    assert check_gpu.without_variants("8.0 9.0a,12.0f") == "8.0;9.0;12.0"


def test_trainer_gpu_check_configures_bf16_runs_with_one_gpu_plans_for_stages_2_and_3(
    tmp_path: Path,
) -> None:
    for stage in (2, 3):
        config = check_trainer.run_config(tmp_path, stage, fused_adam=False)
        assert config.training is not None
        assert config.training.precision is Precision.BF16
        assert config.plan is not None
        assert config.plan.zero_stage == stage
        assert config.plan.deepspeed["bf16"] == {"enabled": True}
        assert config.plan.deepspeed["optimizer"]["params"]["torch_adam"] is True
        assert config.checkpoints is not None
        assert config.checkpoints.interval == 20
        fused = check_trainer.run_config(tmp_path, stage, fused_adam=True)
        assert fused.plan is not None
        assert "torch_adam" not in fused.plan.deepspeed["optimizer"]["params"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a CPU machine gets")
def test_trainer_gpu_check_exits_with_status_2_saying_there_is_no_gpu(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check_trainer.main(["--out", str(tmp_path / "r.json")]) == 2
    assert "no CUDA GPU is visible" in capsys.readouterr().err
