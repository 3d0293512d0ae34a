"""Checkpoint interval auto with two real ranks: after the probe steps rank 0 plans the first
save with a guessed save time, then plans again from each measured save; both ranks save at the
same steps, and the choice (Young-Daly, with its numbers) is reported."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tests.trainer.runs import pretrain_config, run
from trainkube.exitcodes import ExitCode
from trainkube_trainer.interval import PROBE_STEPS


def test_interval_auto_plans_saves_by_young_daly_and_both_ranks_follow(tmp_path: Path) -> None:
    config = pretrain_config(tmp_path, steps=60)
    assert config.checkpoints is not None
    # An MTBF short enough (6 ms) that a tiny CPU run of 60 steps saves several times however
    # fast its steps are: the first plan, on the guessed 30 s save, is sqrt(2 x 30 x 0.006) =
    # 0.6 s, within the run from about 11 ms a step. With 50 ms it was 1.7 s: on a fast machine
    # (under 31 ms a step) the first planned save fell after step 60 and only the last step saved.
    mtbf = 0.006
    policy = config.checkpoints.model_copy(update={"auto_mtbf_seconds": mtbf, "keep_last": 100})
    outcome = run(config.model_copy(update={"checkpoints": policy}), tmp_path)
    assert outcome.exit_code == ExitCode.SUCCESS, outcome.log[-3000:]
    choices = [
        json.loads(line)["checkpointInterval"]
        for line in outcome.log.splitlines()
        if line.startswith("{") and '"checkpointInterval"' in line
    ]
    assert choices, "no interval was reported"
    first = choices[0]
    assert first["reason"].startswith("Young-Daly: sqrt(2 x 30.0 s save (guessed)")
    assert math.isclose(first["seconds"], math.sqrt(2 * 30.0 * mtbf), abs_tol=0.05)  # rounded
    assert any("(measured)" in c["reason"] for c in choices[1:])
    saved = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "ckpt").glob("step-*"))
    assert saved[-1] == 60  # the last step always saves
    assert len(saved) >= 3
    assert saved[0] >= PROBE_STEPS  # nothing is planned before the step time is known
    assert saved != list(range(20, 61, 20))  # not the fixed interval of 20
    for step in saved:
        files = json.loads((tmp_path / "ckpt" / f"step-{step}" / "manifest.json").read_text())
        assert files["worldSize"] == 2
