"""The pure parts of the lm-evaluation-harness evaluation: lm_eval's results as metrics (names,
filters, directions, item counts), gates on a metric where lower is better, the task index of
an include folder, and the include folder's volume in the pod. The trainer test
(tests/trainer/test_harness.py) runs lm_eval for real."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from trainkube.api.evaljob import EvalJob, Gate
from trainkube.api.status import Output
from trainkube.controller import runspec
from trainkube_trainer import gates, harness

TASKS = Path(__file__).parents[1] / "trainer" / "harness_tasks"

# The shape of what lm_eval.simple_evaluate returns (its keys, for a task with one filter, a
# task with two, a perplexity task and a group), trimmed to what the trainer reads.
LM_EVAL_RESULTS: dict[str, Any] = {
    "results": {
        "arc_easy": {
            "name": "arc_easy",
            "alias": "arc_easy",
            "sample_len": 100,
            "acc,none": 0.5,
            "acc_stderr,none": 0.05,
        },
        "gsm8k": {
            "alias": "gsm8k",
            "exact_match,strict-match": 0.25,
            "exact_match,flexible-extract": 0.5,
            "exact_match_stderr,strict-match": "N/A",
        },
        "wikitext": {"alias": "wikitext", "word_perplexity,none": 31.5, "bits_per_byte,none": 1.1},
        "mmlu": {"alias": "mmlu", "acc,none": 0.4, " ": " "},
    },
    "higher_is_better": {
        "arc_easy": {"acc": True},
        "gsm8k": {"exact_match": True},
        "wikitext": {"word_perplexity": False, "bits_per_byte": False},
        "mmlu": {"acc": True},
    },
    "n-samples": {
        "arc_easy": {"original": 2376, "effective": 100},
        "gsm8k": {"original": 1319, "effective": 100},
        "wikitext": {"original": 62, "effective": 62},
    },
}


def test_harness_metrics_are_task_and_metric_named_keeping_filters_other_than_none() -> None:
    found = harness.result_of(LM_EVAL_RESULTS)
    assert found.metrics == {
        "arc_easy.acc": 0.5,
        "arc_easy.acc_stderr": 0.05,
        "arc_easy.examples": 100.0,
        "gsm8k.exact_match,strict-match": 0.25,
        "gsm8k.exact_match,flexible-extract": 0.5,
        "gsm8k.examples": 100.0,
        "wikitext.word_perplexity": 31.5,
        "wikitext.bits_per_byte": 1.1,
        "wikitext.examples": 62.0,
        "mmlu.acc": 0.4,
    }
    assert found.lower_is_better == {"wikitext.word_perplexity", "wikitext.bits_per_byte"}


@pytest.mark.parametrize(
    ("candidate", "passed"),
    [(31.0, True), (33.0, True), (35.0, False)],
)
def test_a_regression_gate_on_a_harness_metric_where_lower_is_better(
    candidate: float, passed: bool
) -> None:
    # word_perplexity 31.5 for the baseline; maxRegression 2: up to 33.5 passes.
    metric = "bench.wikitext.word_perplexity"
    (verdict,) = gates.check(
        [Gate(metric=metric, max_regression=2.0)],
        {metric: candidate},
        {metric: 31.5},
        lower_is_better=frozenset({metric}),
    )
    assert verdict.passed is passed


def test_an_include_folder_with_every_named_task_is_indexed_without_the_built_in_tasks(
    tmp_path: Path,
) -> None:
    shutil.copytree(TASKS, tmp_path / "tasks")
    manager = harness.task_manager(["tiny_story"], tmp_path / "tasks")
    assert set(manager.all_tasks) == {"tiny_story"}


def test_an_include_path_that_is_not_a_folder_is_a_harness_error(tmp_path: Path) -> None:
    with pytest.raises(harness.HarnessError, match=r"includePath: .* is not a folder"):
        harness.task_manager(["tiny_story"], tmp_path / "missing")


def test_the_include_path_claim_is_mounted_read_only_and_reaches_the_run_config() -> None:
    job = EvalJob.model_validate(
        {
            "metadata": {"name": "bench", "namespace": "ns", "uid": "u"},
            "spec": {
                "model": {"volume": {"claimName": "models", "path": "m"}},
                "evaluations": [
                    {
                        "name": "story",
                        "harness": {
                            "tasks": ["tiny_story"],
                            "numFewShot": 2,
                            "includePath": {"claimName": "eval-tasks", "path": "harness"},
                        },
                    }
                ],
                "gates": [{"metric": "story.tiny_story.acc", "min": 0.5}],
            },
        }
    )
    spec = runspec.worker_spec(
        job,
        namespace="ns",
        plan=None,
        attempt=runspec.Attempt(),
        resolve=lambda ref: Output(),
    )
    assert ("eval-tasks", "/data/eval-tasks", True) in {
        (c.claim, c.mount_path, c.read_only) for c in spec.claims
    }
    assert spec.run_config.evaluation is not None
    assert spec.run_config.evaluation.data_root == "/data"
    (story,) = spec.run_config.evaluation.evaluations
    assert story.harness is not None
    assert story.harness.include_path is not None
    assert story.harness.include_path.claim_name == "eval-tasks"
    assert story.harness.num_few_shot == 2
