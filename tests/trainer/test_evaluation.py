"""Evaluation as real processes: metrics for a candidate and a baseline on the same examples,
gate verdicts, the exit code when a gate fails, generation latency and few-shot prompting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.trainer.runs import TINY, Outcome, run
from trainkube.api.data import BuiltinCorpus
from trainkube.api.evaljob import ExactMatch, Gate, Latency, MultipleChoice, Perplexity
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
from trainkube_trainer.models import load_model, load_tokenizer


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


def _eval_config(
    root: Path, candidate: Path, baseline: Path, tasks: list[EvalTask], gates: list[Gate]
) -> RunConfig:
    return RunConfig(
        task=Task.EVAL,
        job="tests/eval",
        model=ModelRef(path=str(candidate)),
        evaluation=Evaluation(
            evaluations=tasks, gates=gates, baseline=ModelRef(path=str(baseline))
        ),
        output=Output(directory=str(root / "out")),
        reporting=Reporting(directory=str(root / "report"), min_interval_seconds=0),
    )


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model ~400x the tiny one's size (25M parameters against 60k), fresh weights: on the CPU
    every token costs it many times the tiny one's time, a margin no machine noise closes."""
    folder = tmp_path_factory.mktemp("large") / "model"
    ref = ModelRef(architecture=TINY.model_copy(update={"layers": 8, "hidden_size": 512}))
    tokenizer = load_tokenizer(ref)
    torch.manual_seed(0)
    load_model(ref, tokenizer=tokenizer, dtype=torch.float32).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def latency_and_few_shot(
    tmp_path_factory: pytest.TempPathFactory, large: Path, untrained: Path
) -> tuple[Outcome, dict[str, Any]]:
    """One evaluation run (one rank, to keep it short) of the large model against the tiny one:
    latency with gates that allow 10 % more time, and few-shot exact match and multiple choice.
    The run's outcome and its results.json."""
    root = tmp_path_factory.mktemp("latency")
    tasks = [
        EvalTask(
            name="speed",
            latency=Latency(builtin=BuiltinCorpus.TINY_EVAL, max_new_tokens=8, warmup=1),
            max_examples=5,
        ),
        EvalTask(
            name="qa",
            exact_match=ExactMatch(
                builtin=BuiltinCorpus.TINY_EVAL, max_new_tokens=4, num_few_shot=2
            ),
            max_examples=4,
        ),
        EvalTask(
            name="choice",
            multiple_choice=MultipleChoice(
                builtin=BuiltinCorpus.TINY_EVAL, answer_field="answer_index", num_few_shot=2
            ),
            max_examples=6,
        ),
    ]
    gates = [
        Gate(metric="speed.ttftP95Ms", max_regression=0.1),
        Gate(metric="speed.tokensPerSecondP95", max_regression=0.1),
        Gate(metric="choice.accuracy", min=0.0),
    ]
    outcome = run(_eval_config(root, large, untrained, tasks, gates), root, ranks=1)
    results = root / "out" / "results.json"
    assert results.exists(), outcome.log[-3000:]
    return outcome, json.loads(results.read_text())


def _by_metric(results: dict[str, Any], evaluation: str) -> dict[str, dict[str, Any]]:
    return {r["metric"]: r for r in results["results"] if r["evaluation"] == evaluation}


def test_a_much_larger_candidate_is_slower_at_every_latency_percentile(
    latency_and_few_shot: tuple[Outcome, dict[str, Any]],
) -> None:
    found = _by_metric(latency_and_few_shot[1], "speed")
    assert set(found) == {"ttftP50Ms", "ttftP95Ms", "tokensPerSecondP50", "tokensPerSecondP95"}
    print({name: (r["value"], r["baseline"]) for name, r in found.items()})
    for name in ("ttftP50Ms", "ttftP95Ms"):
        assert found[name]["value"] > 3 * found[name]["baseline"]
    for name in ("tokensPerSecondP50", "tokensPerSecondP95"):
        assert found[name]["value"] < found[name]["baseline"] / 3


def test_latency_results_record_the_sample_count_and_decoding_settings(
    latency_and_few_shot: tuple[Outcome, dict[str, Any]],
) -> None:
    for result in _by_metric(latency_and_few_shot[1], "speed").values():
        assert result["examples"] == 5
        assert result["setup"] == {
            "decoding": "greedy",
            "maxNewTokens": 8,
            "samples": 5,
            "warmup": 1,
            "device": "cpu (1 threads)",
        }


def test_a_latency_gate_fails_the_job_when_the_candidate_is_slower_than_allowed(
    latency_and_few_shot: tuple[Outcome, dict[str, Any]],
) -> None:
    outcome, results = latency_and_few_shot
    assert outcome.exit_code == ExitCode.GATES_FAILED, outcome.log[-3000:]
    assert outcome.result["outcome"] == "gatesFailed"
    assert results["gatesPassed"] == "1/3"
    ttft, rate, accuracy = results["gates"]
    for gate in (ttft, rate):
        assert gate["passed"] is False
        assert "slower than the baseline by more than 10.0%" in gate["message"]
    assert accuracy["passed"] is True


def test_few_shot_exact_match_and_multiple_choice_run_end_to_end(
    latency_and_few_shot: tuple[Outcome, dict[str, Any]],
) -> None:
    results = latency_and_few_shot[1]
    exact, choice = _by_metric(results, "qa")["exactMatch"], _by_metric(results, "choice")
    assert exact["examples"] == 4
    assert choice["accuracy"]["examples"] == 6
    for result in (exact, choice["accuracy"]):
        assert 0.0 <= result["value"] <= 1.0
        assert 0.0 <= result["baseline"] <= 1.0
