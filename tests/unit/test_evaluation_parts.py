"""The pure parts of the evaluations: few-shot prompts, latency statistics and the latency
gates' ratio. The trainer tests (tests/trainer/test_evaluation.py) run them for real."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trainkube.api.data import BuiltinCorpus
from trainkube.api.evaljob import EvalJobStatus, ExactMatch, Gate, MultipleChoice
from trainkube.controller.report import eval_results
from trainkube.planner.report import report
from trainkube.runconfig import EvalTask
from trainkube_trainer import fewshot, gates, latency
from trainkube_trainer.data.corpus import tiny_eval
from trainkube_trainer.evaluate import _items
from trainkube_trainer.latency import Timing


def _solved(record: dict[str, object]) -> str:
    return f"{record['prompt']}{record['answer']}"


SOLVED = {f"{r['prompt']}{r['answer']}" for r in tiny_eval()}


def _exact_match_items(shots: int, max_examples: int = 20) -> list[tuple[dict[str, object], str]]:
    spec = ExactMatch(builtin=BuiltinCorpus.TINY_EVAL, num_few_shot=shots)
    task = EvalTask(name="qa", exact_match=spec, max_examples=max_examples)
    return _items(task, spec, None, 1234, _solved)


def test_zero_shot_prompts_have_no_examples_before_the_item() -> None:
    assert all(context == "" for _, context in _exact_match_items(0))


def test_few_shot_puts_k_solved_examples_before_each_item_separated_by_blank_lines() -> None:
    items = _exact_match_items(3)
    for record, context in items:
        examples = context.split("\n\n")
        # Three solved examples, each ending in the delimiter, so the item follows a blank line.
        assert len(examples) == 4
        assert examples[-1] == ""
        assert set(examples[:3]) <= SOLVED
        assert (context + str(record["prompt"])).endswith("\n\n" + str(record["prompt"]))


def test_few_shot_examples_come_from_the_set_apart_split_never_from_scored_items() -> None:
    records = [{"prompt": f"Q{i}? ", "answer": f"A{i}"} for i in range(50)]
    pool, scored = fewshot.set_apart(records, num_few_shot=3, separate=None)
    assert pool == records[:5]  # a tenth, set apart before anything is scored
    assert scored == records[5:]
    for position in range(len(scored)):
        context = fewshot.context(pool, num_few_shot=3, seed=1, position=position, render=_solved)
        shown = [e for e in context.split("\n\n") if e]
        assert len(shown) == 3
        assert set(shown) <= {_solved(r) for r in pool}


def test_tiny_eval_sets_apart_a_tenth_or_num_few_shot_whichever_is_more() -> None:
    assert len(_exact_match_items(3, max_examples=1000)) == 180
    assert len(_exact_match_items(32, max_examples=1000)) == 168


def test_a_separate_few_shot_split_leaves_every_example_scored() -> None:
    records = [{"prompt": f"Q{i}? ", "answer": f"A{i}"} for i in range(10)]
    other = [{"prompt": "X? ", "answer": "Y"}] * 2
    assert fewshot.set_apart(records, num_few_shot=2, separate=other) == (other, records)


def test_few_shot_prompts_are_deterministic_and_vary_between_items() -> None:
    first, again = _exact_match_items(2), _exact_match_items(2)
    assert first == again
    assert len({context for _, context in first}) > 1


def test_multiple_choice_examples_show_the_right_choice() -> None:
    spec = MultipleChoice(
        builtin=BuiltinCorpus.TINY_EVAL, answer_field="answer_index", num_few_shot=1
    )
    task = EvalTask(name="choice", multiple_choice=spec, max_examples=5)

    def solved(record: dict[str, object]) -> str:
        choices = record["choices"]
        assert isinstance(choices, list)
        return f"{record['question']}{choices[int(str(record['answer_index']))]}"

    for _, context in _items(task, spec, None, 7, solved):
        question_and_answer = context.removesuffix("\n\n")
        assert "\n\n" not in question_and_answer
        assert question_and_answer in SOLVED  # a tiny-eval question with its right choice


def test_a_few_shot_answer_ends_where_the_model_starts_the_next_example() -> None:
    assert fewshot.answer_of(" 7\n\nWhat is 2 plus 2? 4") == " 7"
    assert fewshot.answer_of("7\nmore") == "7\nmore"


def test_too_few_examples_for_the_few_shot_split_is_an_error_that_says_how_many() -> None:
    records = [{"prompt": str(i), "answer": str(i)} for i in range(3)]
    with pytest.raises(fewshot.FewShotError, match="has only 3 examples"):
        fewshot.set_apart(records, num_few_shot=3, separate=None)
    with pytest.raises(fewshot.FewShotError, match="fewShotSplit has only 1 examples"):
        fewshot.set_apart(records, num_few_shot=2, separate=records[:1])


def test_latency_summary_reports_milliseconds_and_the_slow_tail_of_the_rate() -> None:
    # 20 generations: first token after 10..29 ms, 5..24 ms per token after it.
    timings = [Timing(first_token=(10 + i) / 1000, per_token=(5 + i) / 1000) for i in range(20)]
    found = latency.summary(timings)
    assert found["ttftP50Ms"] == pytest.approx(19.5)
    assert found["ttftP95Ms"] == pytest.approx(28.05)
    assert found["tokensPerSecondP50"] == pytest.approx(1000 / 14.5)
    assert found["tokensPerSecondP95"] == pytest.approx(1000 / 23.05)
    assert found["tokensPerSecondP95"] < found["tokensPerSecondP50"]
    assert found["examples"] == 20
    assert set(found) - {"examples"} == gates.LATENCY_TIMES | gates.LATENCY_RATES


@pytest.mark.parametrize(
    ("metric", "candidate", "baseline", "bound", "passed"),
    [
        ("lat.ttftP95Ms", 109.0, 100.0, 0.1, True),
        ("lat.ttftP95Ms", 112.0, 100.0, 0.1, False),
        ("lat.ttftP95Ms", 50.0, 100.0, 0.0, True),
        # 90 tokens/s against 100 takes 11 % longer per token.
        ("lat.tokensPerSecondP95", 90.0, 100.0, 0.1, False),
        ("lat.tokensPerSecondP95", 92.0, 100.0, 0.1, True),
        ("lat.tokensPerSecondP50", 200.0, 100.0, 0.0, True),
    ],
)
def test_latency_regression_gates_bound_how_much_slower_as_a_ratio(
    metric: str, candidate: float, baseline: float, bound: float, passed: bool
) -> None:
    (verdict,) = gates.check(
        [Gate(metric=metric, max_regression=bound)], {metric: candidate}, {metric: baseline}
    )
    assert verdict.passed is passed
    assert "slower" in verdict.message
    if not passed:
        assert f"slower than the baseline by more than {bound:.1%}" in verdict.message


def _plan_of_eval(tmp_path: Path, gpu_memory: str) -> str:
    shape = {"layers": 32, "hiddenSize": 4096, "heads": 32, "vocabSize": 32000}
    manifest = {
        "apiVersion": "trainkube.io/v1alpha1",
        "kind": "EvalJob",
        "metadata": {"name": "big"},
        "spec": {
            "model": {"hub": {"id": "org/llama-7b"}, "shape": {**shape, "contextLength": 4096}},
            "evaluations": [{"name": "speed", "latency": {"builtin": "tiny-eval"}}],
            "resources": {"nodes": 1, "gpusPerNode": 1, "gpuMemory": gpu_memory},
        },
    }
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(manifest))
    text, ok = report([path], deepspeed=False)
    assert ok
    return text


def test_the_plan_says_when_an_evaluated_model_will_be_offloaded(tmp_path: Path) -> None:
    # 6.7B parameters are 12.6 GiB in 16 bits: more than 80 % of a 12Gi GPU, less of a 16Gi.
    offloaded = _plan_of_eval(tmp_path, "12Gi")
    assert "offload:  more than 80% of a 12.0 GiB GPU" in offloaded
    assert "Accelerate's big-model inference" in offloaded
    assert "offload:" not in _plan_of_eval(tmp_path, "16Gi")


def test_the_operator_keeps_how_latency_was_measured_in_status() -> None:
    setup = {
        "decoding": "greedy",
        "maxNewTokens": 16,
        "samples": 16,
        "warmup": 2,
        "device": "cpu (1 threads)",
    }
    trainer_report = {
        "progress.json": {
            "results": [
                {
                    "evaluation": "speed",
                    "metric": "ttftP95Ms",
                    "value": 12.5,
                    "baseline": 11.0,
                    "examples": 16,
                    "setup": setup,
                }
            ],
            "gates": [{"metric": "speed.ttftP95Ms", "passed": True, "message": "passed"}],
            "gatesPassed": "1/1",
        }
    }
    found = eval_results(trainer_report)
    status = EvalJobStatus(**found).to_wire()
    assert status["results"][0]["setup"] == setup
    assert status["results"][0]["baseline"] == 11.0
    assert status["gatesPassed"] == "1/1"
