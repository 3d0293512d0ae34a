"""Evaluation as real processes: metrics for a candidate and a baseline on the same examples,
gate verdicts, and the exit code when a gate fails."""

from __future__ import annotations

import json
from pathlib import Path

from tests.trainer.runs import run
from trainkube.api.data import BuiltinCorpus
from trainkube.api.evaljob import ExactMatch, Gate, MultipleChoice, Perplexity
from trainkube.exitcodes import ExitCode
from trainkube.runconfig import (
    EvalTask,
    Evaluation,
    ModelRef,
    Output,
    Reporting,
    RunConfig,
    Task,
)


def _config(root: Path, candidate: Path, baseline: Path, gates: list[Gate]) -> RunConfig:
    return RunConfig(
        task=Task.EVAL,
        job="tests/eval",
        model=ModelRef(path=str(candidate)),
        evaluation=Evaluation(
            evaluations=[
                EvalTask(
                    name="held-out",
                    perplexity=Perplexity(builtin=BuiltinCorpus.TINY_STORIES, sequence_length=64),
                    max_examples=40,
                ),
                EvalTask(
                    name="qa",
                    exact_match=ExactMatch(builtin=BuiltinCorpus.TINY_EVAL, max_new_tokens=4),
                    max_examples=6,
                ),
                EvalTask(
                    name="choice",
                    multiple_choice=MultipleChoice(
                        builtin=BuiltinCorpus.TINY_EVAL, answer_field="answer_index"
                    ),
                    max_examples=8,
                ),
            ],
            gates=gates,
            baseline=ModelRef(path=str(baseline)),
        ),
        output=Output(directory=str(root / "out")),
        reporting=Reporting(directory=str(root / "report"), min_interval_seconds=0),
    )


def test_ab_evaluation_reports_metrics_for_both_and_passes_its_gates(
    tmp_path: Path, pretrained: Path, untrained: Path
) -> None:
    gates = [
        Gate(metric="held-out.perplexity", max_regression=0.0),
        Gate(metric="held-out.perplexity", max=100.0),
        Gate(metric="choice.accuracy", min=0.0),
    ]
    outcome = run(_config(tmp_path, pretrained, untrained, gates), tmp_path)
    assert outcome.exit_code == ExitCode.SUCCESS, outcome.log[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    by_metric = {(r["evaluation"], r["metric"]): r for r in results["results"]}
    perplexity = by_metric[("held-out", "perplexity")]
    # The trained model beats its untrained twin on held-out text; an untrained byte model is
    # close to uniform over 259 tokens.
    assert perplexity["value"] < perplexity["baseline"]
    assert perplexity["baseline"] > 100
    assert 0.0 <= by_metric[("qa", "exactMatch")]["value"] <= 1.0
    assert 0.0 <= by_metric[("choice", "accuracy")]["value"] <= 1.0
    assert results["gatesPassed"] == "3/3"
    assert all(g["passed"] for g in results["gates"])
    assert "baseline" in results["gates"][0]["message"]


def test_a_failed_gate_fails_the_evaluation_with_its_exit_code(
    tmp_path: Path, pretrained: Path, untrained: Path
) -> None:
    # The untrained model as candidate is far worse than the trained one as baseline.
    gates = [Gate(metric="held-out.perplexity", max_regression=1.0)]
    outcome = run(_config(tmp_path, untrained, pretrained, gates), tmp_path)
    assert outcome.exit_code == ExitCode.GATES_FAILED
    assert outcome.result["outcome"] == "gatesFailed"
    gate = outcome.result["gates"][0]
    assert gate["passed"] is False
    assert "worse than the baseline by more than 1" in gate["message"]
