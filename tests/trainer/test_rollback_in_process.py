"""On a loss spike two real ranks (gloo, DeepSpeed ZeRO-2, the tiny model) roll back in place:
they agree, load the checkpoint the operator's rule picks into the live engine, lower the
learning rate, skip the batches after it, move the later checkpoints aside, and train on to
the end in the same processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.trainer.runs import pretrain_config, run
from trainkube.api.recovery import rollback_target
from trainkube.exitcodes import ExitCode
from trainkube.runconfig import CheckpointPolicy, Fault, InProcessRollback


def test_a_spike_rolls_back_in_place_and_the_run_completes_below_the_spike(
    tmp_path: Path,
) -> None:
    config = pretrain_config(
        tmp_path,
        steps=60,
        interval=10,
        fault=Fault(spike_at_step=45),
        rollback=InProcessRollback(steps_back=10, lr_factor=0.5, skip_batches=5, rollbacks_left=1),
    )
    config = config.model_copy(
        update={
            "checkpoints": CheckpointPolicy(
                directory=str(tmp_path / "ckpt"), interval=10, keep_last=10
            )
        }
    )
    outcome = run(config, tmp_path)
    assert outcome.exit_code == 0, outcome.log[-3000:]
    [record] = outcome.progress["rollbacks"]
    # Poisoned from step 45, patience 2: diverged at 46; the newest checkpoint <= 46 - 10.
    assert record["detectedAtStep"] == 46
    assert record["fromCheckpointStep"] == rollback_target(
        [10, 20, 30, 40], diverged_at=46, steps_back=10
    )
    assert record["fromCheckpointStep"] == 30
    assert record["learningRateFactor"] == 0.5
    assert record["skipped"] == [30, 35]
    # One attempt, the same two processes: no start after the first, training ran to the end.
    assert outcome.log.count('"event": "start"') == 2
    assert outcome.result["outcome"] == "succeeded"
    assert outcome.progress["step"] == 60
    assert outcome.progress["dataPosition"] == 65  # batches 30-34 were never trained on
    assert outcome.progress["loss"] < record["loss"]
    # The diverged timeline's step-40 is quarantined; the new timeline wrote its own 40-60.
    aside = tmp_path / "ckpt" / "abandoned" / "attempt-1-rollback-1"
    assert sorted(p.name for p in aside.iterdir()) == ["step-40"]
    published = sorted(int(p.name[5:]) for p in (tmp_path / "ckpt").glob("step-*"))
    assert published == [10, 20, 30, 40, 50, 60]
    # The learning rate at step 30 is half what the step-30 checkpoint recorded.
    manifest = json.loads((tmp_path / "ckpt" / "step-30" / "manifest.json").read_text())
    assert record["learningRate"] == pytest.approx(0.5 * manifest["learningRate"])
    events = [e["type"] for e in outcome.progress["events"]]
    assert events.index("diverged") < events.index("checkpointsAbandoned")
    assert events.index("checkpointsAbandoned") < events.index("rolledBack")


def test_a_spike_with_no_checkpoint_early_enough_exits_as_diverged_for_a_pod_restart(
    tmp_path: Path,
) -> None:
    """The fallback: the trainer cannot roll back in place (the only checkpoint, step-20, is
    not stepsBack before the spike), so it exits with the divergence code and result, as
    without in-process rollback, and the operator restarts the pods from step 0."""
    config = pretrain_config(
        tmp_path,
        steps=40,
        fault=Fault(spike_at_step=30),
        rollback=InProcessRollback(steps_back=20, lr_factor=0.5, rollbacks_left=1),
    )
    outcome = run(config, tmp_path)
    assert outcome.exit_code == ExitCode.DIVERGED, outcome.log[-3000:]
    assert outcome.result["divergence"]["step"] == 31
    assert '"reason": "no checkpoint <= 11"' in outcome.log
    assert "rollbacks" not in outcome.progress
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("step-*")) == ["step-20"]
    assert not (tmp_path / "ckpt" / "abandoned").exists()
