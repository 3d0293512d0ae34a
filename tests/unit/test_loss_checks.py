"""The trainer's batched loss checks, pure parts: at which steps the pending losses are
all-reduced and checked, and the detector observing a batch of steps in order."""

from __future__ import annotations

import pytest

from trainkube.api.recovery import SpikeRule
from trainkube_trainer.divergence import DivergenceDetector
from trainkube_trainer.train import LOSS_CHECK_STEPS, loss_check_due


@pytest.mark.parametrize(
    ("step", "log_interval", "eval_interval", "checkpoint", "due"),
    [
        (LOSS_CHECK_STEPS, 1000, 0, False, True),  # at least every LOSS_CHECK_STEPS steps
        (LOSS_CHECK_STEPS + 1, 1000, 0, False, False),  # nothing acts on this step's loss
        (7, 7, 0, False, True),  # a progress report carries the loss
        (6, 3, 0, False, True),
        (9, 1000, 9, False, True),  # validation
        (9, 1000, 0, False, False),  # eval_interval 0: validation only at the end
        (13, 1000, 0, True, True),  # a checkpoint (or an auto-interval plan)
        (37, 1000, 0, False, True),  # the end of training (total is 37)
    ],
)
def test_the_losses_are_checked_before_anything_acts_on_them(
    step: int, log_interval: int, eval_interval: int, checkpoint: bool, due: bool
) -> None:
    assert (
        loss_check_due(
            step,
            total=37,
            log_interval=log_interval,
            eval_interval=eval_interval,
            checkpoint=checkpoint,
        )
        is due
    )


def test_a_batch_of_steps_names_the_step_that_diverged_and_observes_no_further() -> None:
    detector = DivergenceDetector(SpikeRule(window=10, threshold=6, patience=1))
    steady = [(step, 2.0 + 0.01 * (step % 3)) for step in range(1, 11)]
    assert detector.observe_steps(steady) is None
    verdict = detector.observe_steps([(11, 2.01), (12, float("nan")), (13, 2.0)])
    assert verdict is not None
    assert (verdict.step, verdict.rule) == (12, "nan")
    # Step 13 was not observed: the window holds steps 2-11, as after observing up to 12.
    assert list(detector.history) == [loss for _, loss in steady[1:]] + [2.01]


def test_observing_a_batch_is_observing_each_step_in_order() -> None:
    losses = [2.0 + 0.01 * (i % 3) for i in range(20)] + [9.0, 9.0, 9.0]
    one_by_one = DivergenceDetector(SpikeRule(window=10, threshold=6, patience=2))
    found = [
        step
        for step, loss in enumerate(losses, start=1)
        if one_by_one.observe(step, loss) is not None
    ]
    batched = DivergenceDetector(SpikeRule(window=10, threshold=6, patience=2))
    verdicts = [
        batched.observe_steps(list(enumerate(losses, start=1))[i : i + 5])
        for i in range(0, len(losses), 5)
    ]
    assert found[0] == 22
    assert [v.step for v in verdicts if v is not None] == [22]
