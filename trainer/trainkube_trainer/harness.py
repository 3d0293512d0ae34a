"""EleutherAI's lm-evaluation-harness tasks, run on the evaluated model (hub or folder).

lm_eval is not in the trainer image by default: an image that needs it installs it, and a job
that names harness tasks on an image without it fails with a configuration error saying so.
"""

from __future__ import annotations

from trainkube.runconfig import EvalTask, ModelRef


class HarnessError(ValueError):
    """The harness cannot run; the message says why and what to change."""


def evaluate(task: EvalTask, ref: ModelRef) -> dict[str, float]:
    """'<task>.<metric>' for every numeric metric of every harness task; the few-shot examples
    (numFewShot) are the harness's own, from each task's few-shot split."""
    spec = task.harness
    assert spec is not None
    try:
        import lm_eval  # noqa: PLC0415
    except ImportError as error:
        raise HarnessError(
            f"evaluation {task.name!r} uses lm-evaluation-harness tasks, but this trainer image "
            "has no lm_eval package: use an image with `pip install lm-eval`"
        ) from error
    pretrained = ref.path or (ref.hub.id if ref.hub else None)
    if pretrained is None:
        raise HarnessError(f"evaluation {task.name!r}: harness tasks need a hub or path model")
    results = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={pretrained}",
        tasks=spec.tasks,
        num_fewshot=spec.num_few_shot,
    )
    return {
        f"{name}.{metric.split(',')[0]}": float(value)
        for name, metrics in results["results"].items()
        for metric, value in metrics.items()
        if isinstance(value, int | float)
    }
