"""Evaluation: perplexity, exact match, multiple choice (zero- or few-shot), lm-evaluation-harness
tasks and generation latency, for a model and optionally a baseline on the same examples, then
the gates. Every rank evaluates a shard of the examples and sums are all-reduced, except latency,
which rank 0 measures alone (one device, one request at a time), and harness tasks, which rank 0
runs alone (see `harness`); rank 0 writes the results."""

from __future__ import annotations

import json
import math
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch

from trainkube.api.data import DataSource
from trainkube.api.evaljob import FewShot, LatencySetup
from trainkube.exitcodes import ExitCode
from trainkube.runconfig import DataRef, EvalTask, Files, ModelRef, RunConfig
from trainkube_trainer import fewshot, gates, harness, inference, latency
from trainkube_trainer.data.source import load_records
from trainkube_trainer.distributed import DistEnv, broadcast
from trainkube_trainer.models import load_tokenizer
from trainkube_trainer.reporting import Reporter


class EvalError(ValueError):
    """An evaluation cannot run; the message says which and why."""


def _data(source: DataSource, data_root: str | None) -> DataRef:
    files = None
    if source.files is not None:
        root = Path(data_root or "/")
        files = Files(
            path=str(root / source.files.claim_name / source.files.path), format=source.files.format
        )
    return DataRef(hub=source.hub, files=files, builtin=source.builtin)


def _records(
    task: EvalTask, source: DataSource, data_root: str | None, seed: int
) -> list[dict[str, Any]]:
    records = load_records(_data(source, data_root))
    random.Random(seed).shuffle(records)
    return records[: task.max_examples] if task.max_examples else records


Item = tuple[dict[str, Any], str]  # a scored record and the few-shot text before it


def _items(
    task: EvalTask,
    source: FewShot,
    root: str | None,
    seed: int,
    render: Callable[[dict[str, Any]], str],
) -> list[Item]:
    """The scored records, each with its few-shot context (empty when zero-shot)."""
    records = load_records(_data(source, root))
    random.Random(seed).shuffle(records)
    separate = None
    if source.few_shot_split is not None and source.hub is not None and source.num_few_shot:
        hub = source.hub.model_copy(update={"split": source.few_shot_split})
        separate = load_records(DataRef(hub=hub))
    try:
        pool, scored = fewshot.set_apart(
            records, num_few_shot=source.num_few_shot, separate=separate
        )
    except fewshot.FewShotError as error:
        raise EvalError(f"evaluation {task.name!r}: {error}") from error
    scored = scored[: task.max_examples] if task.max_examples else scored
    k = source.num_few_shot
    return [
        (record, fewshot.context(pool, num_few_shot=k, seed=seed, position=i, render=render))
        for i, record in enumerate(scored)
    ]


def _reduce(values: list[float], device: torch.device) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def _pack(
    records: list[dict[str, Any]], tokenizer: Any, *, field: str, sequence_length: int
) -> torch.Tensor:
    """The texts, each followed by end-of-sequence, one stream cut into [n, sequence_length]."""
    if records and field not in records[0]:
        raise EvalError(f"records have no field {field!r} (fields: {sorted(records[0])})")
    stream: list[int] = []
    for record in records:
        stream += tokenizer(str(record[field]), add_special_tokens=False)["input_ids"]
        stream.append(tokenizer.eos_token_id)
    blocks = len(stream) // sequence_length
    if blocks == 0:
        raise EvalError(
            f"{len(stream)} tokens of text make no sequence of {sequence_length}: use a shorter "
            "sequenceLength or more examples"
        )
    return torch.tensor(stream[: blocks * sequence_length]).view(blocks, sequence_length)


def _perplexity(
    task: EvalTask, model: Any, tokenizer: Any, env: DistEnv, root: str | None, seed: int
) -> dict[str, float]:
    spec = task.perplexity
    assert spec is not None
    records = _records(task, spec, root, seed)
    ids = _pack(records, tokenizer, field=spec.text_field, sequence_length=spec.sequence_length)
    total, tokens = 0.0, 0.0
    with torch.no_grad():
        for row in range(env.rank, len(ids), env.world_size):
            x = ids[row : row + 1].to(model.device)
            n = float(x.shape[1] - 1)
            total += float(model(input_ids=x, labels=x).loss) * n
            tokens += n
    total, tokens = _reduce([total, tokens], model.device)
    loss = total / tokens
    return {"loss": loss, "perplexity": math.exp(min(loss, 700)), "examples": float(len(ids))}


def _generate(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int) -> str:
    encoded = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(model.device)
    output = model.generate(
        **encoded,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return str(
        tokenizer.decode(output[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
    )


def _accuracy(
    items: list[Item],
    env: DistEnv,
    device: Any,
    right: Callable[[dict[str, Any], str], bool],
) -> tuple[float, float]:
    """Fraction of all ranks' items that `right` judges correct, and how many there were.
    Each rank judges every world_size-th item."""
    mine = items[env.rank :: env.world_size]
    with torch.no_grad():
        correct = float(sum(right(record, context) for record, context in mine))
    correct, count = _reduce([correct, float(len(mine))], device)
    return correct / count, count


def _exact_match(
    task: EvalTask, model: Any, tokenizer: Any, env: DistEnv, root: str | None, seed: int
) -> dict[str, float]:
    spec = task.exact_match
    assert spec is not None

    def solved(record: dict[str, Any]) -> str:
        return f"{record[spec.prompt_field]}{record[spec.answer_field]}"

    def right(record: dict[str, Any], context: str) -> bool:
        prompt = context + str(record[spec.prompt_field])
        answer = _generate(model, tokenizer, prompt, spec.max_new_tokens)
        if context:
            answer = fewshot.answer_of(answer)
        return answer.strip() == str(record[spec.answer_field]).strip()

    items = _items(task, spec, root, seed, solved)
    value, count = _accuracy(items, env, model.device, right)
    return {"exactMatch": value, "examples": count}


def _choice_logprob(model: Any, tokenizer: Any, question: str, choice: str) -> float:
    context = tokenizer(question, add_special_tokens=False)["input_ids"]
    answer = tokenizer(choice, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([context + answer], device=model.device)
    logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    targets = ids[0, 1:]
    picked = logprobs[torch.arange(len(targets)), targets]
    return float(picked[len(context) - 1 :].sum())


def _multiple_choice(
    task: EvalTask, model: Any, tokenizer: Any, env: DistEnv, root: str | None, seed: int
) -> dict[str, float]:
    spec = task.multiple_choice
    assert spec is not None

    def expected(record: dict[str, Any]) -> int:
        answer = record[spec.answer_field]
        choices = [str(c) for c in record[spec.choices_field]]
        return answer if isinstance(answer, int) else choices.index(str(answer))

    def solved(record: dict[str, Any]) -> str:
        return f"{record[spec.question_field]}{record[spec.choices_field][expected(record)]}"

    def right(record: dict[str, Any], context: str) -> bool:
        choices = [str(c) for c in record[spec.choices_field]]
        question = context + str(record[spec.question_field])
        scores = [_choice_logprob(model, tokenizer, question, c) for c in choices]
        return max(range(len(choices)), key=scores.__getitem__) == expected(record)

    items = _items(task, spec, root, seed, solved)
    value, count = _accuracy(items, env, model.device, right)
    return {"accuracy": value, "examples": count}


def _latency(
    task: EvalTask, model: Any, tokenizer: Any, env: DistEnv, root: str | None, seed: int
) -> tuple[dict[str, float], LatencySetup]:
    """Rank 0 times the generations; every rank gets its numbers."""
    spec = task.latency
    assert spec is not None
    found = None
    if env.is_main:
        records = _records(task, spec, root, seed)[: task.max_examples or latency.SAMPLES]
        prompts = [str(r[spec.prompt_field]) for r in records]
        if not prompts:
            raise EvalError(f"evaluation {task.name!r}: the latency prompt set is empty")
        timings = latency.measure(
            model, tokenizer, prompts, max_new_tokens=spec.max_new_tokens, warmup=spec.warmup
        )
        found = (
            latency.summary(timings),
            latency.setup(
                max_new_tokens=spec.max_new_tokens,
                samples=len(timings),
                warmup=spec.warmup,
                device=model.device,
            ),
        )
    metrics, setup = broadcast(found)
    return metrics, setup


class Measured(NamedTuple):
    """Every metric of every evaluation, as '<evaluation>.<metric>', how each latency
    evaluation was measured, and the metrics where lower is better beyond the names gates
    knows (those harness tasks declare)."""

    metrics: dict[str, float]
    setups: dict[str, LatencySetup]
    lower_is_better: frozenset[str]


def _harness(
    task: EvalTask, model: Any, tokenizer: Any, config: RunConfig, env: DistEnv, role: str
) -> harness.HarnessResult:
    """lm-evaluation-harness tasks; lm_eval's per-item log goes next to results.json (under
    harness/<evaluation>/<role>/) when the job has an output folder."""
    assert task.harness is not None
    assert config.evaluation is not None
    include = None
    if task.harness.include_path is not None:
        where = task.harness.include_path
        include = Path(config.evaluation.data_root or "/") / where.claim_name / where.path
    samples = None
    if config.output is not None:
        samples = Path(config.output.directory) / "harness" / task.name / role
    try:
        return harness.evaluate(
            task, model, tokenizer, env, include=include, seed=config.seed, samples=samples
        )
    except harness.HarnessError as error:
        raise EvalError(str(error)) from error


def evaluate_model(ref: ModelRef, config: RunConfig, env: DistEnv, *, role: str) -> Measured:
    """Every evaluation of `config` on the model `ref` (the `role` one: candidate or
    baseline)."""
    assert config.evaluation is not None
    tokenizer = load_tokenizer(ref)
    dtype = torch.float32 if env.on_cpu else torch.bfloat16
    device = torch.device("cpu" if env.on_cpu else f"cuda:{env.local_rank}")
    with tempfile.TemporaryDirectory(prefix="offload-") as offload:
        model = inference.load(
            ref,
            tokenizer=tokenizer,
            dtype=dtype,
            device=device,
            budget=inference.device_budget(device),
            offload_folder=Path(offload),
        )
        return _evaluate(model, tokenizer, config, env, role)


def _evaluate(model: Any, tokenizer: Any, config: RunConfig, env: DistEnv, role: str) -> Measured:
    assert config.evaluation is not None
    root, seed = config.evaluation.data_root, config.seed
    metrics: dict[str, float] = {}
    setups: dict[str, LatencySetup] = {}
    lower: set[str] = set()
    for task in config.evaluation.evaluations:
        if task.latency:
            found, setups[task.name] = _latency(task, model, tokenizer, env, root, seed)
        elif task.perplexity:
            found = _perplexity(task, model, tokenizer, env, root, seed)
        elif task.exact_match:
            found = _exact_match(task, model, tokenizer, env, root, seed)
        elif task.multiple_choice:
            found = _multiple_choice(task, model, tokenizer, env, root, seed)
        else:
            result = _harness(task, model, tokenizer, config, env, role)
            found = result.metrics
            lower |= {f"{task.name}.{name}" for name in result.lower_is_better}
        metrics.update({f"{task.name}.{name}": value for name, value in found.items()})
    return Measured(metrics, setups, frozenset(lower))


def _examples(candidate: dict[str, float], evaluation: str, metric: str) -> int | None:
    """Items behind a metric: its evaluation's count, or for a harness metric
    ('<task>.<metric>') its task's."""
    task = metric.rpartition(".")[0]
    keys = [f"{evaluation}.{task}.examples"] if task else []
    for key in [*keys, f"{evaluation}.examples"]:
        if key in candidate:
            return int(candidate[key])
    return None


def results(
    candidate: dict[str, float],
    baseline: dict[str, float] | None,
    setups: dict[str, LatencySetup],
) -> list[dict[str, Any]]:
    """One entry per metric (the model's value, the baseline's, and how it was measured)."""
    out = []
    for key, value in candidate.items():
        evaluation, metric = key.split(".", 1)
        if metric.rpartition(".")[2] == "examples":
            continue
        entry: dict[str, Any] = {"evaluation": evaluation, "metric": metric, "value": value}
        if baseline and key in baseline:
            entry["baseline"] = baseline[key]
        examples = _examples(candidate, evaluation, metric)
        if examples is not None:
            entry["examples"] = examples
        if evaluation in setups:
            entry["setup"] = setups[evaluation].to_wire()
        out.append(entry)
    return out


def run(config: RunConfig, env: DistEnv, reporter: Reporter) -> ExitCode:
    evaluation = config.evaluation
    if evaluation is None:
        raise EvalError("an eval run config needs an evaluation section")
    reporter.progress(force=True, phase="evaluating", model="candidate")
    candidate, setups, lower = evaluate_model(config.model, config, env, role="candidate")
    baseline = None
    if evaluation.baseline is not None:
        reporter.progress(force=True, phase="evaluating", model="baseline")
        # Only the model differs: the same device, prompts and decoding.
        baseline = evaluate_model(evaluation.baseline, config, env, role="baseline").metrics
    verdicts = gates.check(evaluation.gates, candidate, baseline, lower_is_better=lower)
    report = {
        "results": results(candidate, baseline, setups),
        "gates": [{"metric": v.metric, "passed": v.passed, "message": v.message} for v in verdicts],
        "gatesPassed": f"{sum(v.passed for v in verdicts)}/{len(verdicts)}",
    }
    if env.is_main:
        text = json.dumps(report, indent=2, sort_keys=True)
        (Path(config.reporting.directory) / "results.json").write_text(text)
        if config.output is not None:
            Path(config.output.directory).mkdir(parents=True, exist_ok=True)
            (Path(config.output.directory) / "results.json").write_text(text)
    reporter.progress(force=True, phase="done", **report)
    return ExitCode.SUCCESS if all(v.passed for v in verdicts) else ExitCode.GATES_FAILED
