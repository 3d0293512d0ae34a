"""The trainer as real processes on the CPU: it trains, resumes exactly, changes world size,
detects divergence with the right exit code, and fine-tunes with LoRA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from tests.trainer.runs import TINY, pretrain_config, run
from trainkube.api.data import BuiltinCorpus
from trainkube.api.finetunejob import Lora
from trainkube.api.training import Training
from trainkube.exitcodes import ExitCode
from trainkube.runconfig import DataRef, Fault, ModelRef, Output, Task, Tracking


@pytest.mark.parametrize("stage", [2, 3])
def test_two_ranks_train_a_tiny_model_and_lower_its_loss(tmp_path: Path, stage: int) -> None:
    outcome = run(pretrain_config(tmp_path, stage=stage, steps=40), tmp_path)
    assert outcome.exit_code == ExitCode.SUCCESS, outcome.log[-3000:]
    assert '"world_size": 2' in outcome.log
    assert f'"stage": {stage}' in json.dumps(json.loads((tmp_path / "run.json").read_text()))
    first = next(
        json.loads(line)["loss"]
        for line in outcome.log.splitlines()
        if line.startswith("{") and '"event": "progress"' in line and '"step": 5,' in line
    )
    assert outcome.result["outcome"] == "succeeded"
    assert outcome.result["step"] == 40
    assert outcome.result["loss"] < 0.8 * first
    assert outcome.result["validationLoss"] < 0.8 * first
    # Checkpoints were published with manifests, and retention kept what it should.
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step-20", "step-40"]
    manifest = json.loads((tmp_path / "ckpt" / "step-40" / "manifest.json").read_text())
    assert manifest["step"] == 40
    assert manifest["worldSize"] == 2
    assert manifest["files"]
    # The saved model loads with transformers and has the architecture's shape.
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "model")
    assert model.config.num_hidden_layers == TINY.layers


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    straight = run(pretrain_config(tmp_path / "a", steps=40), tmp_path / "a")
    assert straight.exit_code == 0, straight.log[-3000:]

    wandb = Tracking(project="tests", run_id="tiny-b", directory=str(tmp_path / "b"))
    crashed = run(
        pretrain_config(tmp_path / "b", steps=40, fault=Fault(crash_after_step=20), tracking=wandb),
        tmp_path / "b",
    )
    assert crashed.exit_code == ExitCode.FAILED
    assert crashed.result["outcome"] == "failed"
    assert "injected crash after step 20" in crashed.result["error"]
    resumed = run(pretrain_config(tmp_path / "b", steps=40, tracking=wandb), tmp_path / "b")
    assert resumed.exit_code == 0, resumed.log[-3000:]
    # Rank 0 logged offline (no key given), to the same W&B run in both attempts.
    runs = sorted((tmp_path / "b" / "wandb").glob("offline-run-*-tiny-b"))
    assert len(runs) == 2
    assert '"event": "resumed", "step": 20, "fromCheckpoint": "step-20"' in resumed.log
    assert resumed.result["step"] == 40
    assert resumed.result["loss"] == pytest.approx(straight.result["loss"], abs=1e-5)


def test_resume_on_one_rank_from_a_two_rank_checkpoint(tmp_path: Path) -> None:
    crashed = run(pretrain_config(tmp_path, steps=40, fault=Fault(crash_after_step=20)), tmp_path)
    assert crashed.exit_code == ExitCode.FAILED
    resumed = run(pretrain_config(tmp_path, ranks=1, steps=40), tmp_path, ranks=1)
    assert resumed.exit_code == 0, resumed.log[-3000:]
    assert '"universal": true' in resumed.log
    assert resumed.result["step"] == 40
    manifest = json.loads((tmp_path / "ckpt" / "step-40" / "manifest.json").read_text())
    assert manifest["worldSize"] == 1


def test_a_corrupted_newest_checkpoint_is_skipped(tmp_path: Path) -> None:
    crashed = run(
        pretrain_config(tmp_path, steps=40, interval=10, fault=Fault(crash_after_step=30)), tmp_path
    )
    assert crashed.exit_code == ExitCode.FAILED
    shard = next((tmp_path / "ckpt" / "step-30" / "ds").glob("*optim_states.pt"))
    shard.write_bytes(b"not a checkpoint")
    resumed = run(pretrain_config(tmp_path, steps=40, interval=10), tmp_path)
    assert resumed.exit_code == 0, resumed.log[-3000:]
    assert "does not match its checksum" in resumed.log
    skipped = next(line for line in resumed.log.splitlines() if "checkpointSkipped" in line)
    assert json.loads(skipped[skipped.index("{") :])["step"] == 30
    assert '"fromCheckpoint": "step-20"' in resumed.log


def test_an_injected_spike_is_detected_at_the_right_step(tmp_path: Path) -> None:
    config = pretrain_config(tmp_path, steps=40, fault=Fault(spike_at_step=30))
    outcome = run(config, tmp_path)
    assert outcome.exit_code == ExitCode.DIVERGED
    divergence = outcome.result["divergence"]
    # Batches are poisoned from step 30; patience 2 makes step 31 the verdict.
    assert divergence["step"] == 31
    assert divergence["rule"].startswith("spike: ")
    assert divergence["loss"] > 2 * outcome.progress["loss"] or divergence["loss"] > 5


def test_a_nan_loss_is_divergence_at_once(tmp_path: Path) -> None:
    outcome = run(pretrain_config(tmp_path, steps=40, fault=Fault(nan_at_step=12)), tmp_path)
    assert outcome.exit_code == ExitCode.DIVERGED
    assert outcome.result["divergence"]["step"] == 12
    assert outcome.result["divergence"]["rule"] == "nan"


def test_a_nan_between_loss_checks_is_named_at_its_step_and_never_saved(tmp_path: Path) -> None:
    """The losses are checked in batches (every 10 steps here, and before each checkpoint): the
    NaN of step 17 is found at step 20, where a checkpoint is due, and stops the run there."""
    config = pretrain_config(tmp_path, steps=40, interval=10, fault=Fault(nan_at_step=17))
    assert config.training is not None
    config = config.model_copy(
        update={"training": config.training.model_copy(update={"log_interval": 40})}
    )
    outcome = run(config, tmp_path)
    assert outcome.exit_code == ExitCode.DIVERGED, outcome.log[-3000:]
    assert outcome.result["divergence"]["step"] == 17
    assert outcome.result["divergence"]["rule"] == "nan"
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("step-*")) == ["step-10"]


def test_lora_fine_tune_writes_an_adapter_that_changes_the_output(
    tmp_path: Path, pretrained: Path
) -> None:
    config = pretrain_config(tmp_path, steps=30).model_copy(
        update={
            "task": Task.FINETUNE,
            "model": ModelRef(path=str(pretrained)),
            "method": "lora",
            "lora": Lora(rank=8, alpha=16, dropout=0.0, target_modules=["q_proj", "v_proj"]),
            "data": DataRef(
                builtin=BuiltinCorpus.TINY_INSTRUCTIONS,
                prompt_field="prompt",
                response_field="response",
                sequence_length=80,  # the longest item is 73 tokens
                validation_fraction=0.05,
            ),
            "training": Training(
                max_steps=30, global_batch_size=16, learning_rate=5e-3, log_interval=5
            ),
            "output": Output(directory=str(tmp_path / "out"), merge=True),
        }
    )
    outcome = run(config, tmp_path)
    assert outcome.exit_code == 0, outcome.log[-3000:]
    assert (tmp_path / "out" / "adapter" / "adapter_config.json").exists()

    base = AutoModelForCausalLM.from_pretrained(pretrained)
    ids = torch.tensor([[70, 75, 83, 35, 108, 115, 35]])
    with torch.no_grad():
        before = base(input_ids=ids).logits
        adapted = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(pretrained), tmp_path / "out" / "adapter"
        )
        after = adapted(input_ids=ids).logits
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "model")(
            input_ids=ids
        ).logits
    assert not torch.allclose(before, after, atol=1e-4)
    assert torch.allclose(after, merged, atol=1e-4)


def test_zero3_with_optimizer_and_parameter_offload_trains_on_the_cpu(tmp_path: Path) -> None:
    config = pretrain_config(tmp_path, stage=3, steps=20)
    assert config.plan is not None
    zero = config.plan.deepspeed["zero_optimization"]
    zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    outcome = run(config, tmp_path)
    assert outcome.exit_code == 0, outcome.log[-3000:]
    assert outcome.result["step"] == 20
    assert outcome.result["loss"] < 4.0


def test_runs_leave_no_shared_memory_behind(tmp_path: Path) -> None:
    """DeepSpeed's CPU backend maps a 66 MB /dev/shm segment per rank and never unlinks it;
    the trainer unlinks it once all ranks have it mapped, so neither a crashed run nor a
    finished one leaves memory behind."""
    shm = Path("/dev/shm")
    before = set(shm.glob("deepspeed_allreduce_buffer_*"))
    crashed = run(pretrain_config(tmp_path, steps=10, fault=Fault(crash_after_step=2)), tmp_path)
    assert crashed.exit_code == ExitCode.FAILED, crashed.log[-3000:]
    finished = run(pretrain_config(tmp_path, steps=4), tmp_path)
    assert finished.exit_code == ExitCode.SUCCESS, finished.log[-3000:]
    # DeepSpeed did build its shared-memory op here (else there would be nothing to test).
    assert "deepspeed_shm_comm" in finished.log
    assert set(shm.glob("deepspeed_allreduce_buffer_*")) - before == set()
