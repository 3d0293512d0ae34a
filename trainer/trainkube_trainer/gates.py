"""Gate verdicts from evaluation results: pure, so the rule is testable on its own.

Lower is better for perplexity and loss, higher for every other metric. A `maxRegression` gate
fails when the candidate is worse than the baseline by more than the bound.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainkube.api.evaljob import Gate

LOWER_IS_BETTER = frozenset({"perplexity", "loss"})


@dataclass(frozen=True)
class GateVerdict:
    metric: str
    passed: bool
    message: str


def check(
    gates: list[Gate],
    candidate: dict[str, float],
    baseline: dict[str, float] | None,
) -> list[GateVerdict]:
    verdicts = []
    for gate in gates:
        name = gate.metric.split(".", 1)[1]
        value = candidate.get(gate.metric)
        if value is None:
            known = ", ".join(sorted(candidate))
            verdicts.append(GateVerdict(gate.metric, False, f"no such metric (there are: {known})"))
            continue
        problems, notes = [], [f"{gate.metric} = {value:.4g}"]
        if gate.min is not None and value < gate.min:
            problems.append(f"below min {gate.min:g}")
        if gate.max is not None and value > gate.max:
            problems.append(f"above max {gate.max:g}")
        if gate.max_regression is not None:
            base = (baseline or {}).get(gate.metric)
            if base is None:
                problems.append("no baseline value to compare with")
            else:
                worse = value - base if name in LOWER_IS_BETTER else base - value
                notes.append(f"baseline {base:.4g}, worse by {worse:.4g}")
                if worse > gate.max_regression:
                    problems.append(f"worse than the baseline by more than {gate.max_regression:g}")
        passed = not problems
        verdicts.append(
            GateVerdict(gate.metric, passed, "; ".join(notes + (problems or ["passed"])))
        )
    return verdicts
