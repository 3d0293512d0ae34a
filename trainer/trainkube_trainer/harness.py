"""EleutherAI's lm-evaluation-harness (`lm_eval`) tasks, run on the evaluated model.

Rank 0 runs every task alone, on the model the trainer already loaded (whole, or spread by
Accelerate: see `inference`), wrapped in lm_eval's `HFLM`; the other ranks wait for its
numbers. lm_eval's own data-parallel mode is not used: it splits requests only when `HFLM`
loads the model itself from a name under `accelerate launch` on several GPUs (its Accelerator,
its process group), never for a model it is handed, and never on the CPU. Rank 0 alone also
makes the result, by construction, the one a 1-rank run gets. The wait is on a gloo group of
its own with a long timeout: a benchmark on a large model runs for hours, longer than the
default group's timeout, and rank 0 sends its failure, not only its numbers, so a task that
cannot run ends every rank with the same message.

Tasks are lm_eval's own, by name, or task YAMLs of the job's (`includePath`, a folder on a
volume, lm_eval's include_path), which may read local files (`dataset_path: json` and
`data_files`): lm_eval runs with that folder as its working directory, so relative
`data_files` are read from it. When every named task is in that folder, lm_eval's thousands
of built-in task files are not indexed (several seconds); its tasks take precedence over
built-in ones of the same name either way.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from trainkube.runconfig import EvalTask
from trainkube_trainer.distributed import DistEnv

# Requests per forward pass: lm_eval sorts them by length, so a batch pads little. "auto"
# would probe the largest batch that fits with forward passes at full length: slow on the CPU
# and for a model spread over host memory and disk.
BATCH_SIZE = 8
# How long the other ranks wait for rank 0's tasks.
WAIT = timedelta(days=7)


class HarnessError(ValueError):
    """The harness cannot run; the message says why and what to change."""


@dataclass(frozen=True)
class HarnessResult:
    """'<task>.<metric>' for every numeric metric of every task and group (with
    '<task>.examples', the items scored), and the metrics where lower is better."""

    metrics: dict[str, float]
    lower_is_better: frozenset[str] = field(default_factory=frozenset)


def metric_name(key: str) -> str:
    """lm_eval's 'acc,none' as 'acc'; a metric after a filter other than none keeps the
    filter's name ('exact_match,strict-match'), or the two filters' values would collide."""
    metric, _, filter_name = key.partition(",")
    return metric if filter_name == "none" else key


def result_of(results: dict[str, Any]) -> HarnessResult:
    """The numbers in what `lm_eval.simple_evaluate` returns: the metrics in its 'results'
    (per task and group, keyed '<metric>,<filter>'; values such as 'N/A' are left out, and so
    are keys without a filter: name, alias, sample_len), 'n-samples' and 'higher_is_better'."""
    metrics: dict[str, float] = {}
    lower: set[str] = set()
    for task, values in results["results"].items():
        directions = results.get("higher_is_better", {}).get(task, {})
        for key, value in values.items():
            if "," not in key or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            name = metric_name(key)
            metrics[f"{task}.{name}"] = float(value)
            if directions.get(key.partition(",")[0]) is False:
                lower.add(f"{task}.{name}")
    for task, counts in results.get("n-samples", {}).items():
        metrics[f"{task}.examples"] = float(counts["effective"])
    return HarnessResult(metrics, frozenset(lower))


def task_manager(tasks: list[str], include: Path | None) -> Any:
    """lm_eval's TaskManager: the include folder alone when it has every named task."""
    from lm_eval.tasks import TaskManager  # noqa: PLC0415 - 1 s; only harness evaluations

    if include is None:
        return TaskManager()
    if not include.is_dir():
        raise HarnessError(f"harness.includePath: {include} is not a folder in the pod")
    local = TaskManager(include_path=str(include), include_defaults=False)
    if set(tasks) <= set(local.all_tasks):
        return local
    return TaskManager(include_path=str(include))


def write_samples(results: dict[str, Any], folder: Path) -> None:
    """lm_eval's per-item log (prompts, choices, the model's answers and scores), one
    `samples_<task>.jsonl` per task, and its results without them as `results.json`."""
    from lm_eval.utils import handle_non_serializable  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    for task, samples in results.get("samples", {}).items():
        lines = (json.dumps(s, default=handle_non_serializable) + "\n" for s in samples)
        (folder / f"samples_{task}.jsonl").write_text("".join(lines))
    rest = {key: value for key, value in results.items() if key != "samples"}
    text = json.dumps(rest, indent=2, sort_keys=True, default=handle_non_serializable)
    (folder / "results.json").write_text(text)


def run_tasks(
    task: EvalTask,
    model: Any,
    tokenizer: Any,
    *,
    include: Path | None,
    seed: int,
    samples: Path | None = None,
) -> HarnessResult:
    """The harness tasks of `task` on `model`, in this process (rank 0's part); lm_eval's
    sample log written to `samples` when given."""
    spec = task.harness
    assert spec is not None
    from lm_eval import simple_evaluate  # noqa: PLC0415
    from lm_eval.models.huggingface import HFLM  # noqa: PLC0415

    manager = task_manager(spec.tasks, include)
    unknown = sorted(set(spec.tasks) - set(manager.all_tasks))
    if unknown:
        where = f"built-in or in {include}" if include else "built-in (set includePath for yours)"
        raise HarnessError(
            f"evaluation {task.name!r}: lm-evaluation-harness has no task {', '.join(unknown)} "
            f"({where}): use task, group or tag names `lm-eval ls tasks` lists"
        )
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=BATCH_SIZE)
    with contextlib.chdir(include) if include else contextlib.nullcontext():
        results = simple_evaluate(
            model=lm,
            tasks=list(spec.tasks),
            num_fewshot=spec.num_few_shot,
            limit=task.max_examples,
            task_manager=manager,
            log_samples=samples is not None,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    assert results is not None  # None only on ranks other than lm_eval's rank 0
    if samples is not None:
        write_samples(results, samples)
    return result_of(results)


def evaluate(
    task: EvalTask,
    model: Any,
    tokenizer: Any,
    env: DistEnv,
    *,
    include: Path | None,
    seed: int,
    samples: Path | None = None,
) -> HarnessResult:
    """Rank 0 runs the tasks; every rank returns its result, or raises its error."""
    if env.world_size == 1:
        return run_tasks(task, model, tokenizer, include=include, seed=seed, samples=samples)
    group = torch.distributed.new_group(backend="gloo", timeout=WAIT)
    outcome: tuple[HarnessResult | None, str | None] = (None, None)
    error: Exception | None = None
    if env.is_main:
        try:
            outcome = (
                run_tasks(task, model, tokenizer, include=include, seed=seed, samples=samples),
                None,
            )
        except Exception as failure:
            error, outcome = failure, (None, f"{type(failure).__name__}: {failure}")
    box = [outcome]
    torch.distributed.broadcast_object_list(box, src=0, group=group)
    torch.distributed.destroy_process_group(group)
    if error is not None:
        raise error
    found, message = box[0]
    if found is None:
        raise HarnessError(f"evaluation {task.name!r}: rank 0 could not run it: {message}")
    return found
