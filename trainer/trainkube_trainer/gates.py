"""Gate verdicts from evaluation results: pure, so the rule is testable on its own.

Lower is better for perplexity, loss and time to first token, and for the metrics the caller
names (harness tasks declare theirs), higher for every other metric.
A `maxRegression` gate fails when the candidate is worse than the baseline by more than the
bound, a `minImprovement` gate when it is not better by at least the bound: in the metric's
units, except for latency metrics, where it is a ratio of times (0.1: at most 10 % slower, or at
least 10 % faster), since an absolute number of milliseconds means nothing across models and
devices.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainkube.api.evaljob import Gate

# Latency metrics (see latency.summary): times, and rates (the inverse of a time).
LATENCY_TIMES = frozenset({"ttftP50Ms", "ttftP95Ms"})
LATENCY_RATES = frozenset({"tokensPerSecondP50", "tokensPerSecondP95"})
LOWER_IS_BETTER = frozenset({"perplexity", "loss"}) | LATENCY_TIMES


def slower_by(name: str, value: float, base: float) -> float:
    """How much slower the candidate is than the baseline, as a ratio of times (0.1: 10 %
    slower; negative when faster)."""
    if name in LATENCY_TIMES:
        return value / base - 1 if base > 0 else 0.0
    return base / value - 1 if value > 0 else float("inf")


@dataclass(frozen=True)
class GateVerdict:
    metric: str
    passed: bool
    message: str


def check(
    gates: list[Gate],
    candidate: dict[str, float],
    baseline: dict[str, float] | None,
    *,
    lower_is_better: frozenset[str] = frozenset(),
) -> list[GateVerdict]:
    """Each gate's verdict; `lower_is_better`: full metric names ('<evaluation>.<metric>')
    where lower is better besides perplexity, loss and time to first token."""
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
        if gate.max_regression is not None or gate.min_improvement is not None:
            base = (baseline or {}).get(gate.metric)
            if base is None:
                problems.append("no baseline value to compare with")
            else:
                lower = name in LOWER_IS_BETTER or gate.metric in lower_is_better
                problems += _regression(name, value, base, gate, notes, lower)
        passed = not problems
        verdicts.append(
            GateVerdict(gate.metric, passed, "; ".join(notes + (problems or ["passed"])))
        )
    return verdicts


def _regression(
    name: str, value: float, base: float, gate: Gate, notes: list[str], lower: bool
) -> list[str]:
    """Compare with the baseline: a note of by how much, and the problems if the candidate is
    worse by more than maxRegression or better by less than minImprovement."""
    problems = []
    regression, improvement = gate.max_regression, gate.min_improvement
    if name in LATENCY_TIMES | LATENCY_RATES:
        slower = slower_by(name, value, base)
        notes.append(f"baseline {base:.4g}, {slower:+.1%} slower")
        if regression is not None and slower > regression:
            problems.append(
                f"slower than the baseline by more than {regression:.1%} "
                f"(maxRegression {regression:g})"
            )
        if improvement is not None and -slower < improvement:
            problems.append(f"not faster than the baseline by at least {improvement:.1%}")
        return problems
    worse = value - base if lower else base - value
    notes.append(f"baseline {base:.4g}, worse by {worse:.4g}")
    if regression is not None and worse > regression:
        problems.append(f"worse than the baseline by more than {regression:g}")
    if improvement is not None and -worse < improvement:
        problems.append(f"not better than the baseline by at least {improvement:g}")
    return problems
