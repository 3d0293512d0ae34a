"""lm-evaluation-harness tasks in an EvalJob, for real: a task of ours (tests/trainer/
harness_tasks: a YAML over local jsonl files, laid out as the folder of a volume claim) run by
lm_eval on the trained tiny model and its untrained twin, on 2 ranks, with nothing downloaded
(the Hugging Face libraries are offline)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.trainer.runs import Outcome, run
from trainkube.api.evaljob import EvalJobStatus, Gate, Harness
from trainkube.api.refs import VolumePath
from trainkube.controller.report import eval_results
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
from trainkube_trainer import harness
from trainkube_trainer.models import load_model
from trainkube_trainer.tokenizer import from_path

TASKS = Path(__file__).parent / "harness_tasks"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
# The task: "<name> gave the <thing> to <friend>, and they played all" and three choices, the
# tiny-stories ending "day. The end." and two of its letters scrambled.
STORY = EvalTask(
    name="story",
    harness=Harness(
        tasks=["tiny_story"],
        num_few_shot=2,
        include_path=VolumePath(claim_name="eval-tasks", path="harness"),
    ),
)


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No hub, and a datasets cache of the module's own (the workers inherit both)."""
    cache = tmp_path_factory.mktemp("datasets-cache")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**OFFLINE, "HF_DATASETS_CACHE": str(cache)}.items():
            patch.setenv(name, value)
        yield


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the trainer finds volumes (the pod's /data): claim eval-tasks holds the task
    folder at harness/."""
    root = tmp_path_factory.mktemp("data")
    shutil.copytree(TASKS, root / "eval-tasks" / "harness")
    return root


@pytest.fixture(scope="module")
def story_run(
    tmp_path_factory: pytest.TempPathFactory,
    offline: None,
    data_root: Path,
    pretrained: Path,
    untrained: Path,
) -> tuple[Outcome, Path]:
    """The trained model against the untrained one on tiny_story, two-shot, on 2 ranks; the
    outcome and the output folder."""
    root = tmp_path_factory.mktemp("harness")
    config = RunConfig(
        task=Task.EVAL,
        job="tests/harness",
        model=ModelRef(path=str(pretrained)),
        evaluation=Evaluation(
            evaluations=[STORY],
            gates=[
                Gate(metric="story.tiny_story.acc", min=0.75),
                Gate(metric="story.tiny_story.acc", max_regression=0.0),
            ],
            baseline=ModelRef(path=str(untrained)),
            data_root=str(data_root),
        ),
        output=Output(directory=str(root / "out")),
        reporting=Reporting(directory=str(root / "report"), min_interval_seconds=0),
    )
    outcome = run(config, root, ranks=2)
    assert outcome.exit_code == ExitCode.SUCCESS, outcome.log[-4000:]
    return outcome, root / "out"


def test_harness_task_metric_lands_in_results_and_status_with_its_gates(
    story_run: tuple[Outcome, Path],
) -> None:
    outcome, out = story_run
    results = json.loads((out / "results.json").read_text())
    story = {r["metric"]: r for r in results["results"] if r["evaluation"] == "story"}
    assert set(story) == {"tiny_story.acc", "tiny_story.acc_stderr"}
    accuracy = story["tiny_story.acc"]
    # The trained model knows how every story ends; the untrained one picks by noise.
    assert accuracy["value"] == 1.0
    assert accuracy["baseline"] < 0.5
    assert accuracy["examples"] == 8
    assert results["gatesPassed"] == "2/2"
    assert "story.tiny_story.acc = 1" in results["gates"][0]["message"]
    # What the operator writes into the EvalJob's status, from the trainer's report.
    status = EvalJobStatus(**eval_results({"progress.json": outcome.progress})).to_wire()
    assert status["gatesPassed"] == "2/2"
    assert {"evaluation": "story", "metric": "tiny_story.acc"}.items() <= next(
        r for r in status["results"] if r["metric"] == "tiny_story.acc"
    ).items()


def _solved(split: str) -> list[str]:
    lines = (TASKS / "tiny_story" / f"{split}.jsonl").read_text().splitlines()
    items = [json.loads(line) for line in lines]
    return [f"{i['question']} {i['choices'][i['answer']]}" for i in items]


def _samples(out: Path, role: str) -> list[dict[str, Any]]:
    text = (out / "harness" / "story" / role / "samples_tiny_story.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_num_few_shot_puts_two_solved_examples_before_every_harness_item(
    story_run: tuple[Outcome, Path],
) -> None:
    out = story_run[1]
    train = set(_solved("train"))
    for role in ("candidate", "baseline"):
        samples = _samples(out, role)
        assert len(samples) == 8
        for sample in samples:
            question = sample["doc"]["question"]
            # lm_eval's log: one (context, continuation) per choice, the same context.
            contexts = {context for context, _ in sample["arguments"]}
            (context,) = contexts
            *shots, scored = context.split("\n\n")
            assert scored == question
            assert len(shots) == 2
            assert set(shots) <= train
        reported = json.loads((out / "harness" / "story" / role / "results.json").read_text())
        assert reported["configs"]["tiny_story"]["num_fewshot"] == 2
        assert reported["n-shot"]["tiny_story"] == 2


def test_harness_on_two_ranks_equals_one_process(
    story_run: tuple[Outcome, Path], data_root: Path, pretrained: Path
) -> None:
    """Rank 0 runs the tasks alone: the 2-rank job's per-item scores are those lm_eval gets
    here, in this one process, on the same model."""
    out = story_run[1]
    tokenizer = from_path(pretrained)
    ref = ModelRef(path=str(pretrained))
    model: Any = load_model(ref, tokenizer=tokenizer, dtype=torch.float32)
    model.eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers (OMP_NUM_THREADS=1): the same float sums
    try:
        here = harness.run_tasks(  # still offline: story_run's environment holds here
            STORY,
            model,
            tokenizer,
            include=data_root / "eval-tasks" / "harness",
            seed=RunConfig.model_fields["seed"].default,
            samples=out.parent / "one-process",
        )
    finally:
        torch.set_num_threads(threads)
    results = json.loads((out / "results.json").read_text())
    two_ranks = {r["metric"]: r["value"] for r in results["results"]}
    assert {k: v for k, v in here.metrics.items() if not k.endswith(".examples")} == two_ranks
    one = (out.parent / "one-process" / "samples_tiny_story.jsonl").read_text().splitlines()
    scores = [json.loads(line)["filtered_resps"] for line in one]
    assert scores == [s["filtered_resps"] for s in _samples(out, "candidate")]
