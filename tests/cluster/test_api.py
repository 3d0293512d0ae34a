"""The CRDs on the real apiserver: examples apply, `kubectl explain` and `kubectl get trainkube`
tell a user what they need, and bad input is refused at apply time with the field named."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.conftest import apply_manifests as _apply
from tests.localcluster.cluster import ClusterError, LocalCluster
from trainkube.api.status import Condition, ConditionType, JobStatus, Phase, Progress, Reason

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = {
    p.stem: yaml.safe_load(p.read_text()) for p in sorted((REPO / "examples").glob("*.yaml"))
}
PRETRAIN = EXAMPLES["01-tiny-pretrain-cpu"]
LORA = EXAMPLES["02-lora-finetune"]
EVAL = EXAMPLES["03-ab-eval"]
TINY_SHAPE = PRETRAIN["spec"]["model"]["architecture"]
DELETE = object()


def _changed(manifest: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of `manifest` with dotted paths set (or removed, for DELETE)."""
    out = copy.deepcopy(manifest)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return out


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_example_applies_cleanly(crds: LocalCluster, namespace: str, name: str) -> None:
    out = _apply(crds, namespace, EXAMPLES[name])
    assert "created" in out


def test_kubectl_explain_prints_the_field_descriptions(crds: LocalCluster) -> None:
    resources = crds.kubectl("explain", "llmtrainingjob.spec.resources")
    assert "nodes, GPUs and the memory they declare" in resources
    assert "gpuMemory\t<string>" in resources
    assert "memory of each GPU, with a unit, e.g. '80Gi'" in resources
    lora = crds.kubectl("explain", "finetunejob.spec.lora.rank")
    assert "rank r of the update matrices." in lora
    gates = crds.kubectl("explain", "evaljob.spec.gates.maxRegression")
    assert "worse than the baseline by more than this" in gates


def test_kubectl_get_trainkube_lists_all_three_kinds_with_their_columns(
    crds: LocalCluster, namespace: str
) -> None:
    for name in ("01-tiny-pretrain-cpu", "02-lora-finetune", "03-ab-eval"):
        _apply(crds, namespace, EXAMPLES[name])
    listing = crds.kubectl("get", "trainkube", "-n", namespace)
    for resource in (
        "llmtrainingjob.trainkube.io/tiny-pretrain",
        "finetunejob.trainkube.io/tiny-lora",
        "evaljob.trainkube.io/tiny-ab",
    ):
        assert resource in listing
    headers = [line.split() for line in listing.splitlines() if line.startswith("NAME")]
    assert ["NAME", "PHASE", "STEPS", "LOSS", "STAGE", "AGE"] in headers
    assert ["NAME", "PHASE", "METHOD", "STEPS", "LOSS", "STAGE", "AGE"] in headers
    assert ["NAME", "PHASE", "GATES", "AGE"] in headers


def test_status_written_through_the_status_subresource_shows_in_columns(
    crds: LocalCluster, namespace: str
) -> None:
    _apply(crds, namespace, PRETRAIN)
    status = JobStatus(
        observed_generation=1,
        phase=Phase.RUNNING,
        conditions=[
            Condition(
                type=ConditionType.RUNNING,
                status="True",
                reason=Reason.WORKERS_RUNNING,
                message="2/2 workers running",
                last_transition_time="2026-01-01T00:00:00Z",
            )
        ],
        progress=Progress(step=20, total_steps=60, steps="20/60", loss="3.1416"),
    )
    crds.kubectl(
        "patch",
        "llmtrainingjob",
        "tiny-pretrain",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status.to_wire()}),
    )
    row = crds.kubectl("get", "llmtrainingjob", "tiny-pretrain", "-n", namespace, "--no-headers")
    assert row.split()[:4] == ["tiny-pretrain", "Running", "20/60", "3.1416"]


BAD_INPUT: list[tuple[str, dict[str, Any], dict[str, Any], list[str]]] = [
    # (case id, valid base manifest, changes, fragments the refusal must contain)
    (
        "nodes-wrong-type",
        PRETRAIN,
        {"spec.resources.nodes": "two"},
        ["spec.resources.nodes", "must be of type integer"],
    ),
    (
        "nodes-zero",
        PRETRAIN,
        {"spec.resources.nodes": 0},
        ["spec.resources.nodes", "greater than or equal to 1"],
    ),
    (
        "gpus-negative",
        PRETRAIN,
        {"spec.resources.gpusPerNode": -1},
        ["spec.resources.gpusPerNode", "greater than or equal to 0"],
    ),
    (
        "batch-zero",
        PRETRAIN,
        {"spec.training.globalBatchSize": 0},
        ["spec.training.globalBatchSize", "greater than or equal to 1"],
    ),
    (
        "lr-zero",
        PRETRAIN,
        {"spec.training.learningRate": 0},
        ["spec.training.learningRate", "greater than 0"],
    ),
    (
        "precision-unknown",
        PRETRAIN,
        {"spec.training.precision": "fp8"},
        ["spec.training.precision", 'Unsupported value: "fp8"', '"bf16", "fp16", "fp32"'],
    ),
    (
        "schedule-unknown",
        PRETRAIN,
        {"spec.training.lrSchedule": "exponential"},
        ["spec.training.lrSchedule", "Unsupported value"],
    ),
    (
        "zero-stage-4",
        PRETRAIN,
        {"spec.parallelism.zeroStage": 4},
        ["spec.parallelism.zeroStage", 'zeroStage must be "auto" or an integer 0..3'],
    ),
    (
        "zero-stage-word",
        PRETRAIN,
        {"spec.parallelism.zeroStage": "max"},
        ["spec.parallelism.zeroStage", 'zeroStage must be "auto" or an integer 0..3'],
    ),
    (
        "micro-batch-zero",
        PRETRAIN,
        {"spec.parallelism.microBatchSize": 0},
        ["spec.parallelism.microBatchSize", 'must be "auto" or an integer >= 1'],
    ),
    (
        "offload-unknown",
        PRETRAIN,
        {"spec.parallelism.offloadOptimizer": "gpu"},
        ["spec.parallelism.offloadOptimizer", "Unsupported value"],
    ),
    (
        "param-offload-below-stage-3",
        PRETRAIN,
        {"spec.parallelism.zeroStage": 2, "spec.parallelism.offloadParameters": "cpu"},
        ["spec.parallelism.offloadParameters", "needs ZeRO stage 3"],
    ),
    (
        "steps-and-epochs",
        PRETRAIN,
        {"spec.training.epochs": 1},
        ["spec.training", "set exactly one of maxSteps, epochs"],
    ),
    (
        "neither-steps-nor-epochs",
        PRETRAIN,
        {"spec.training.maxSteps": DELETE},
        ["spec.training", "set exactly one of maxSteps, epochs"],
    ),
    (
        "two-model-sources",
        PRETRAIN,
        {"spec.model.hub": {"id": "gpt2"}},
        ["spec.model", "set exactly one of hub, volume, architecture, fromJob"],
    ),
    (
        "no-model-source",
        PRETRAIN,
        {"spec.model.architecture": DELETE},
        ["spec.model", "set exactly one of hub, volume, architecture, fromJob"],
    ),
    (
        "heads-do-not-divide-width",
        PRETRAIN,
        {"spec.model.architecture.hiddenSize": 66},
        ["spec.model.architecture.hiddenSize", "hiddenSize must be divisible by heads"],
    ),
    (
        "memory-not-a-quantity",
        PRETRAIN,
        {"spec.resources.gpuMemory": "80GB"},
        ["spec.resources.gpuMemory", "should match"],
    ),
    (
        "unknown-field",
        PRETRAIN,
        {"spec.training.learnignRate": 0.1},
        ['unknown field "spec.training.learnignRate"'],
    ),
    (
        "two-data-sources",
        PRETRAIN,
        {"spec.data.files": {"claimName": "data", "format": "jsonl"}},
        ["spec.data", "set exactly one of hub, files, builtin"],
    ),
    (
        "prompt-without-response",
        PRETRAIN,
        {"spec.data.promptField": "prompt"},
        ["spec.data.promptField", "promptField and responseField go together"],
    ),
    (
        "warmup-longer-than-run",
        PRETRAIN,
        {"spec.training.maxSteps": 60, "spec.training.warmupSteps": 60},
        ["spec.training.warmupSteps", "warmupSteps must be smaller than maxSteps"],
    ),
    (
        "warmup-steps-and-ratio",
        PRETRAIN,
        {"spec.training.warmupRatio": 0.1},
        ["spec.training.warmupRatio", "set warmupSteps or warmupRatio, not both"],
    ),
    (
        "warmup-ratio-whole-run",
        PRETRAIN,
        {"spec.training.warmupSteps": DELETE, "spec.training.warmupRatio": 1.0},
        ["spec.training.warmupRatio", "less than 1"],
    ),
    (
        "adam-epsilon-zero",
        PRETRAIN,
        {"spec.training.adamEpsilon": 0},
        ["spec.training.adamEpsilon", "greater than 0"],
    ),
    (
        "latency-of-one-token",
        EVAL,
        {
            "spec.evaluations": [
                *EVAL["spec"]["evaluations"][:2],
                {"name": "speed", "latency": {"builtin": "tiny-eval", "maxNewTokens": 1}},
            ]
        },
        ["spec.evaluations[2].latency.maxNewTokens", "greater than or equal to 2"],
    ),
    (
        "few-shot-split-of-builtin-data",
        EVAL,
        {
            "spec.evaluations": [
                EVAL["spec"]["evaluations"][0],
                {
                    "name": "qa",
                    "exactMatch": {
                        "builtin": "tiny-eval",
                        "numFewShot": 2,
                        "fewShotSplit": "train",
                    },
                },
                EVAL["spec"]["evaluations"][2],
            ]
        },
        ["spec.evaluations[1].exactMatch.fewShotSplit", "fewShotSplit names another split"],
    ),
    (
        "two-checkpoint-volumes",
        PRETRAIN,
        {"spec.checkpoints.volume": {"claimName": "ckpt"}},
        ["spec.checkpoints.createVolume", "not both"],
    ),
    (
        "path-escapes-volume",
        PRETRAIN,
        {
            "spec.checkpoints.createVolume": DELETE,
            "spec.checkpoints.volume": {"claimName": "ckpt", "path": "runs/../../etc"},
        },
        ["spec.checkpoints.volume.path", "should match"],
    ),
    (
        "wandb-online-without-key",
        PRETRAIN,
        {"spec.tracking": {"project": "p"}},
        ["spec.tracking.apiKeySecretRef", "needs apiKeySecretRef"],
    ),
    (
        "lr-factor-above-one",
        PRETRAIN,
        {"spec.rollback.lrFactor": 1.5},
        ["spec.rollback.lrFactor", "less than or equal to 1"],
    ),
    (
        "deadline-zero",
        PRETRAIN,
        {"spec.activeDeadlineSeconds": 0},
        ["spec.activeDeadlineSeconds", "greater than or equal to 1"],
    ),
    (
        "pull-policy-unknown",
        PRETRAIN,
        {"spec.template": {"imagePullPolicy": "Sometimes"}},
        ["spec.template.imagePullPolicy", "should match"],
    ),
    (
        "lora-settings-on-full",
        LORA,
        {"spec.method": "full"},
        ["spec.lora", "lora settings apply to method lora only"],
    ),
    (
        "merge-on-full",
        LORA,
        {"spec.method": "full", "spec.lora": DELETE},
        ["spec.output.merge", "a full fine-tune writes the whole model"],
    ),
    (
        "method-unknown",
        LORA,
        {"spec.method": "qlora"},
        ["spec.method", 'Unsupported value: "qlora"'],
    ),
    (
        "fine-tune-from-architecture",
        LORA,
        {
            "spec.baseModel.fromJob": DELETE,
            "spec.baseModel.architecture": PRETRAIN["spec"]["model"]["architecture"],
        },
        ["spec.baseModel.architecture", "a fine-tune starts from trained weights"],
    ),
    (
        "lora-rank-zero",
        LORA,
        {"spec.lora.rank": 0},
        ["spec.lora.rank", "greater than or equal to 1"],
    ),
    (
        "regression-gate-without-baseline",
        EVAL,
        {"spec.baseline": DELETE},
        ["spec.gates", "a gate with maxRegression or minImprovement compares with the baseline"],
    ),
    (
        "improvement-gate-without-baseline",
        EVAL,
        {
            "spec.baseline": DELETE,
            "spec.gates": [{"metric": "held-out.perplexity", "minImprovement": 0.5}],
        },
        ["spec.gates", "a gate with maxRegression or minImprovement compares with the baseline"],
    ),
    (
        "gate-on-unknown-evaluation",
        EVAL,
        {"spec.gates": [{"metric": "mmlu.accuracy", "min": 0.5}]},
        ["spec.gates", "must start with the name of one of the evaluations"],
    ),
    (
        "evaluation-two-kinds",
        EVAL,
        {
            "spec.evaluations": [
                {
                    "name": "x",
                    "perplexity": {"builtin": "tiny-stories"},
                    "exactMatch": {"builtin": "tiny-eval"},
                }
            ],
            "spec.gates": [],
        },
        [
            "spec.evaluations[0]",
            "set exactly one of perplexity, multipleChoice, exactMatch, harness",
        ],
    ),
    (
        "no-evaluations",
        EVAL,
        {"spec.evaluations": [], "spec.gates": []},
        ["spec.evaluations", "should have at least 1 items"],
    ),
    (
        "duplicate-evaluation-names",
        EVAL,
        {
            "spec.evaluations": [{"name": "x", "perplexity": {"builtin": "tiny-stories"}}] * 2,
            "spec.gates": [],
        },
        ["spec.evaluations", "evaluation names must be unique"],
    ),
    (
        "gate-without-bound",
        EVAL,
        {"spec.gates": [{"metric": "held-out.perplexity"}]},
        [
            "spec.gates[0]",
            "a gate needs at least one of min, max, maxRegression or minImprovement",
        ],
    ),
    (
        "from-job-of-unknown-kind",
        EVAL,
        {"spec.model.fromJob.kind": "EvalJob"},
        ["spec.model.fromJob.kind", "Unsupported value"],
    ),
    # A memory size without a unit is bytes: refused, instead of a job that cannot fit later.
    (
        "gpu-memory-without-unit",
        PRETRAIN,
        {"spec.resources.gpuMemory": "80"},
        [
            "spec.resources.gpuMemory",
            "resources.gpuMemory must carry a unit and be at least 1Gi, e.g. 80Gi for an 80 GB "
            "GPU: 80 without a unit means 80 bytes",
        ],
    ),
    (
        "gpu-memory-below-1gi",
        PRETRAIN,
        {"spec.resources.gpuMemory": "512Mi"},
        ["spec.resources.gpuMemory", "at least 1Gi, e.g. 80Gi for an 80 GB GPU: 512Mi is less"],
    ),
    (
        "cpu-memory-without-unit",
        PRETRAIN,
        {"spec.resources.cpuMemoryPerNode": "64"},
        [
            "spec.resources.cpuMemoryPerNode",
            "resources.cpuMemoryPerNode must carry a unit and be at least 1Gi, e.g. 64Gi: 64 "
            "without a unit means 64 bytes",
        ],
    ),
    (
        "nvme-size-without-unit",
        PRETRAIN,
        {"spec.resources.nvme": {"sizePerNode": "3"}},
        ["spec.resources.nvme.sizePerNode", "resources.nvme.sizePerNode must carry a unit"],
    ),
    (
        "checkpoint-volume-without-unit",
        LORA,
        {"spec.checkpoints.createVolume.size": "500"},
        [
            "spec.checkpoints.createVolume.size",
            "checkpoints.createVolume.size must carry a unit and be at least 1Gi, e.g. 500Gi: 500 "
            "without a unit means 500 bytes",
        ],
    ),
    # A sequence longer than the model is built for.
    (
        "sequence-longer-than-context",
        PRETRAIN,
        {"spec.data.sequenceLength": 256},
        [
            "spec.data.sequenceLength",
            "data.sequenceLength (2048 when unset) must be at most "
            "model.architecture.contextLength, the longest sequence the model is built for: "
            "shorten data.sequenceLength, or raise model.architecture.contextLength",
        ],
    ),
    (
        "default-sequence-longer-than-context",
        PRETRAIN,
        {"spec.data.sequenceLength": DELETE},
        ["spec.data.sequenceLength", "must be at most model.architecture.contextLength"],
    ),
    (
        "fine-tune-sequence-longer-than-shape",
        LORA,
        {
            "spec.baseModel.fromJob": DELETE,
            "spec.baseModel.hub": {"id": "some-org/tiny"},
            "spec.baseModel.shape": {**TINY_SHAPE, "contextLength": 32},
        },
        [
            "spec.data.sequenceLength",
            "data.sequenceLength (2048 when unset) must be at most baseModel.shape.contextLength",
        ],
    ),
    (
        "perplexity-sequence-longer-than-baseline",
        EVAL,
        {
            "spec.baseline.fromJob": DELETE,
            "spec.baseline.hub": {"id": "some-org/tiny"},
            "spec.baseline.shape": {**TINY_SHAPE, "contextLength": 32},
        },
        [
            "spec.evaluations",
            "every evaluations[].perplexity.sequenceLength (2048 when unset) must be at most "
            "baseline.shape.contextLength",
        ],
    ),
]


@pytest.mark.parametrize(
    ("base", "changes", "fragments"),
    [case[1:] for case in BAD_INPUT],
    ids=[case[0] for case in BAD_INPUT],
)
def test_bad_input_is_refused_at_apply_with_the_field_named(
    crds: LocalCluster,
    namespace: str,
    base: dict[str, Any],
    changes: dict[str, Any],
    fragments: list[str],
) -> None:
    manifest = _changed(base, changes)
    with pytest.raises(ClusterError) as refused:
        _apply(crds, namespace, manifest)
    for fragment in fragments:
        assert fragment in str(refused.value)
    # Nothing was stored.
    kind = manifest["kind"].lower()
    assert crds.kubectl("get", kind, "-n", namespace, "--ignore-not-found", "-o", "name") == ""


def test_sizes_at_their_minimum_and_a_sequence_as_long_as_the_context_apply(
    crds: LocalCluster, namespace: str
) -> None:
    edge = {
        "spec.resources.gpuMemory": "1Gi",
        "spec.resources.cpuMemoryPerNode": "1024Mi",
        "spec.resources.nvme": {"sizePerNode": "1.5G"},
        "spec.checkpoints.createVolume.size": "1Gi",
        "spec.data.sequenceLength": TINY_SHAPE["contextLength"],
    }
    assert "created" in _apply(crds, namespace, _changed(PRETRAIN, edge))


def test_bad_input_table_covers_at_least_25_cases() -> None:
    assert len(BAD_INPUT) >= 25
    assert len({case[0] for case in BAD_INPUT}) == len(BAD_INPUT)


@pytest.mark.parametrize(
    ("base", "changes", "fragments"),
    [
        (PRETRAIN, {"spec.model.architecture.layers": 4}, ["spec.model", "model is immutable"]),
        (PRETRAIN, {"spec.data.builtin": "tiny-instructions"}, ["spec.data", "data is immutable"]),
        (
            LORA,
            {"spec.lora": DELETE, "spec.output": DELETE, "spec.method": "full"},
            ["spec.method", "method is immutable"],
        ),
        (EVAL, {"spec.model.fromJob.name": "other"}, ["spec.model", "model is immutable"]),
    ],
    ids=["pretrain-model", "pretrain-data", "finetune-method", "eval-model"],
)
def test_changing_an_immutable_field_of_an_existing_job_is_refused(
    crds: LocalCluster,
    namespace: str,
    base: dict[str, Any],
    changes: dict[str, Any],
    fragments: list[str],
) -> None:
    _apply(crds, namespace, base)
    with pytest.raises(ClusterError) as refused:
        _apply(crds, namespace, _changed(base, changes))
    for fragment in fragments:
        assert fragment in str(refused.value)


def test_a_mutable_field_of_an_existing_job_can_change(crds: LocalCluster, namespace: str) -> None:
    _apply(crds, namespace, PRETRAIN)
    out = _apply(crds, namespace, _changed(PRETRAIN, {"spec.training.maxSteps": 240}))
    assert "configured" in out
    steps = crds.kubectl(
        "get",
        "llmtrainingjob",
        "tiny-pretrain",
        "-n",
        namespace,
        "-o",
        "jsonpath={.spec.training.maxSteps}",
    )
    assert steps == "240"
