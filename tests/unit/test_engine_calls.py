"""The engine-call timing's sums (warm-up calls left out of each kind, every call counted
against the time outside) and the per-rank medians the benchmark reports from them."""

from __future__ import annotations

from typing import Any

import pytest

from tests.benchmarks import engine_calls


def test_the_sums_leave_out_the_warm_up_calls_and_the_outside_time_counts_every_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine_calls, "WARMUP", 1)
    calls = {
        "forward": [(1.0, 0.9, 5), (0.25, 0.2, 1), (0.25, 0.25, 0)],
        "backward": [(2.0, 1.5, 7), (0.5, 0.5, 2)],
        "step": [(0.5, 0.5, 3), (0.125, 0.125, 4)],
    }
    summary = engine_calls.summary(calls, wall=5.0)
    assert summary["forward"] == {"calls": 2, "wall": 0.5, "cpu": 0.45, "minorFaults": 1}
    assert summary["backward"] == {"calls": 1, "wall": 0.5, "cpu": 0.5, "minorFaults": 2}
    assert summary["step"] == {"calls": 1, "wall": 0.125, "cpu": 0.125, "minorFaults": 4}
    assert summary["wall"] == 5.0
    assert summary["outside"] == 0.375  # 5 - (1.5 + 2.5 + 0.625): the warm-up calls too


def _rank(forward: float, outside: float) -> dict[str, Any]:
    kinds = {kind: {"cpu": 1.0} for kind in engine_calls.KINDS}
    return {**kinds, "forward": {"cpu": forward}, "wall": 10.0, "outside": outside}


def test_the_ratios_are_per_rank_medians_of_cpu_time_and_of_the_outside_share() -> None:
    pairs = [
        {"calls": {"bare": [_rank(1.0, 1.0), _rank(2.0, 1.0)], "trainer": [t0, t1]}}
        for t0, t1 in [
            (_rank(1.1, 1.2), _rank(2.0, 1.0)),
            (_rank(1.3, 1.1), _rank(2.2, 0.9)),
            (_rank(0.9, 1.5), _rank(1.8, 1.0)),
        ]
    ]
    ratios = engine_calls.ratios(pairs, "trainer")
    assert ratios["forward"] == [1.1, 1.0]  # rank 0: 1.1, 1.3, 0.9; rank 1: 1.0, 1.1, 0.9
    assert ratios["backward"] == [1.0, 1.0]
    assert ratios["outside"] == [0.02, 0.0]  # shares 0.12, 0.11, 0.15 against 0.10
