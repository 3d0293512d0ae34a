"""The confidence interval the benchmarks report for a median ratio."""

from __future__ import annotations

import random

import pytest

from tests.benchmarks.stats import median_interval


def test_median_interval_takes_the_order_statistics_the_binomial_tail_allows() -> None:
    # 12 values at 95%: P(fewer than 3 below the median) = 79/4096 = 0.019 <= 0.025, fewer
    # than 4 would be 299/4096 = 0.073: the 3rd smallest and the 3rd largest.
    assert median_interval([float(v) for v in range(12, 0, -1)]) == (3.0, 10.0)
    # 6 values: only the extremes (1/64 <= 0.025, 7/64 is not).
    assert median_interval([5.0, 1.0, 4.0, 2.0, 6.0, 3.0]) == (1.0, 6.0)


def test_median_interval_is_none_for_too_few_values() -> None:
    # 5 values: even the extremes miss the median with probability 2/32 = 0.0625 > 0.05.
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) is None
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0], confidence=0.9) == (1.0, 5.0)


def test_median_interval_covers_the_median_at_least_as_often_as_it_claims() -> None:
    rng = random.Random(7)
    trials, covered = 2000, 0
    for _ in range(trials):
        interval = median_interval([rng.expovariate(1.0) for _ in range(12)])
        assert interval is not None
        covered += interval[0] <= 0.6931471805599453 <= interval[1]  # ln 2, the median
    assert covered / trials >= 0.94  # 96.1% in theory; 2000 trials put it within ~1%


def _run(steps: int, stages: dict[int, list[float]]) -> dict[str, object]:
    return {
        "commit": "abc1234",
        "steps": steps,
        "stages": [
            {"zeroStage": stage, "engineCheck": "identical", "pairs": [{"ratio": r} for r in rs]}
            for stage, rs in stages.items()
        ],
    }


def test_pooled_runs_take_every_pair_of_a_stage_together() -> None:
    from tests.benchmarks.trainer_vs_deepspeed import _pool  # noqa: PLC0415

    results = {
        "a": _run(210, {0: [0.90, 0.91, 0.92], 2: [1.0]}),
        "b": _run(210, {0: [0.93, 0.94, 0.95], 2: [1.1, 1.2]}),
    }
    pooled = _pool(results, ["a", "b"])
    zero, two = pooled["stages"]
    assert pooled["pooled"] == ["a", "b"]
    assert [p["ratio"] for p in zero["pairs"]] == [0.90, 0.91, 0.92, 0.93, 0.94, 0.95]
    assert zero["ratio"] == 0.925  # the median of all six, not a median of medians
    assert zero["ratio95"] == [0.90, 0.95]  # six values: the extremes
    assert two["ratio"] == 1.1


def test_runs_that_measured_differently_are_not_pooled() -> None:
    from tests.benchmarks.trainer_vs_deepspeed import _pool  # noqa: PLC0415

    results = {"a": _run(210, {0: [1.0]}), "b": _run(1010, {0: [1.0]})}
    with pytest.raises(SystemExit, match="differ in steps"):
        _pool(results, ["a", "b"])
