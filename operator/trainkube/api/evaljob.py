"""EvalJob: evaluating one model, or a candidate against a baseline (A/B), with gates that
pass or fail the job."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from trainkube.api.base import DNS_LABEL, ApiModel, Rule, exactly_one_of, rules
from trainkube.api.data import DATA_SOURCE_FIELDS, DataSource
from trainkube.api.model import MODEL_SOURCE_FIELDS, ModelSource
from trainkube.api.refs import VolumePath
from trainkube.api.resources import Resources
from trainkube.api.run import RunControl
from trainkube.api.status import JobStatus
from trainkube.api.template import PodTemplate
from trainkube.api.tracking import Tracking


class Perplexity(DataSource):
    """Perplexity (and mean token loss) of the model on a text dataset."""

    text_field: str = Field(default="text", description="field holding the text.", max_length=128)
    sequence_length: int = Field(
        default=2048, description="tokens per evaluated sequence.", ge=8, le=1048576
    )


FEW_SHOT_RULE = Rule(
    rule="!has(self.fewShotSplit) || (has(self.hub) && self.fewShotSplit != self.hub.split)",
    message="fewShotSplit names another split of the same hub dataset (e.g. train when hub.split "
    "is validation): set hub, and a split other than hub.split; for files and builtin data the "
    "few-shot examples are set apart from the shuffled examples instead",
    field_path=".fewShotSplit",
)


class FewShot(DataSource):
    """Few-shot (in-context) prompting: numFewShot solved examples before each scored item,
    drawn deterministically from a separate split, never from the examples scored."""

    model_config = DataSource.model_config | {
        "json_schema_extra": rules(
            exactly_one_of(*DATA_SOURCE_FIELDS, what="data"),
            FEW_SHOT_RULE,
        )
    }

    num_few_shot: int = Field(
        default=0,
        description="solved examples put before each scored item (0: zero-shot). They are "
        "separated by a blank line, each written as the item's prompt followed by its answer; "
        "for exact match the completion is then cut at its first blank line, where a model "
        "starts the next example.",
        ge=0,
        le=32,
    )
    few_shot_split: str | None = Field(
        default=None,
        description="for hub data: the split the examples come from (e.g. train), another than "
        "hub.split. Unset (and for files or builtin data): after the seeded shuffle, the first "
        "tenth of the examples (at least numFewShot) is set apart as the few-shot split and "
        "never scored. Each item's examples are drawn from it by a generator seeded with the "
        "job's seed and the item's position, so a rerun prompts with the same examples.",
        max_length=128,
    )


class MultipleChoice(FewShot):
    """Multiple-choice items (hub, files or builtin): the model's answer is the choice with the
    highest log-likelihood. Metric: accuracy."""

    question_field: str = Field(default="question", description="field with the question.")
    choices_field: str = Field(default="choices", description="field with the list of choices.")
    answer_field: str = Field(
        default="answer", description="field with the index of the right choice."
    )


class ExactMatch(FewShot):
    """Generation items (hub, files or builtin): greedy completion of the prompt, compared with
    the answer after trimming whitespace. Metric: exactMatch."""

    prompt_field: str = Field(default="prompt", description="field with the prompt.")
    answer_field: str = Field(default="answer", description="field with the expected answer.")
    max_new_tokens: int = Field(
        default=32, description="longest completion generated.", ge=1, le=8192
    )


class Harness(ApiModel):
    """Tasks of EleutherAI's lm-evaluation-harness (lm_eval, in the trainer image), run by rank
    0 on the model and then the baseline. Metrics: <task>.<metric> for every numeric metric of
    every task and group, e.g. arc_easy.acc (a metric after a filter other than none keeps its
    name: gsm8k.exact_match,strict-match), and <task>.examples."""

    tasks: list[str] = Field(
        description="task, group or tag names, e.g. [hellaswag, arc_easy]: lm_eval's own (their "
        "data comes from the Hugging Face Hub) or those defined in includePath.",
        min_length=1,
        max_length=64,
    )
    num_few_shot: int = Field(
        default=0,
        description="few-shot examples per item, passed to lm-evaluation-harness as num_fewshot "
        "(the harness draws them from each task's few-shot split, seeded with the job's seed). "
        "A task whose own config sets num_fewshot: 0 stays zero-shot.",
        ge=0,
        le=64,
    )
    include_path: VolumePath | None = Field(
        default=None,
        description="a folder of task YAML files of your own on a volume (lm_eval's "
        "include_path), mounted read-only; its tasks take precedence over built-in ones of the "
        "same name. They may read local files (dataset_path: json, csv or parquet with "
        "dataset_kwargs.data_files): the harness runs with this folder as its working "
        "directory, so relative data_files are read from it.",
    )


class Latency(DataSource):
    """Generation latency of the model and the baseline on the same device (rank 0's), one
    prompt at a time: each prompt is completed greedily with exactly maxNewTokens new tokens
    (end-of-sequence does not stop it, so every model generates the same count). The first
    warmup prompts are generated but not timed. Metrics: ttftP50Ms and ttftP95Ms (time to the
    first new token, prompt included), tokensPerSecondP50 and tokensPerSecondP95 (new tokens
    after the first, per second; p95 is the slow tail: 95 % of generations were at least this
    fast). The sample count and decoding settings are recorded with each result."""

    prompt_field: str = Field(default="prompt", description="field with the prompt.")
    max_new_tokens: int = Field(
        default=32, description="new tokens generated for every prompt.", ge=2, le=8192
    )
    warmup: int = Field(
        default=2,
        description="generations before the timed ones (not counted): first-call costs such as "
        "memory allocation and kernel selection are not latency a user sees.",
        ge=0,
        le=100,
    )


EVALUATION_TYPES = ("perplexity", "multipleChoice", "exactMatch", "harness", "latency")


class Evaluation(ApiModel):
    """One evaluation: a name and exactly one of perplexity, multipleChoice, exactMatch,
    harness or latency."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": rules(exactly_one_of(*EVALUATION_TYPES, what="evaluation"))
    }

    name: str = Field(
        description="name of the evaluation; gates refer to its metrics as <name>.<metric>.",
        pattern=DNS_LABEL,
        max_length=63,
    )
    perplexity: Perplexity | None = Field(default=None, description="perplexity on text.")
    multiple_choice: MultipleChoice | None = Field(
        default=None, description="multiple-choice accuracy."
    )
    exact_match: ExactMatch | None = Field(default=None, description="exact-match accuracy.")
    harness: Harness | None = Field(default=None, description="lm-evaluation-harness tasks.")
    latency: Latency | None = Field(
        default=None,
        description="time to first token and tokens per second, model against baseline.",
    )
    max_examples: int | None = Field(
        default=None,
        description="evaluate at most this many examples (for latency: timed prompts after "
        "the warm-up ones, 32 when unset; for harness: the first this many of each task, "
        "lm_eval's limit).",
        ge=1,
    )


class Gate(ApiModel):
    """A pass/fail condition on one metric. Set min and/or max for absolute bounds, maxRegression
    to fail when the model is worse than the baseline by more than that, and/or minImprovement
    to fail unless it is better than the baseline by at least that."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": rules(
            Rule(
                rule="has(self.min) || has(self.max) || has(self.maxRegression) || "
                "has(self.minImprovement)",
                message="a gate needs at least one of min, max, maxRegression or minImprovement",
            ),
        )
    }

    metric: str = Field(
        description="<evaluation name>.<metric>, e.g. 'held-out.perplexity' or 'qa.exactMatch'.",
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\.[A-Za-z0-9_,.-]+$",
        max_length=256,
    )
    min: float | None = Field(default=None, description="fail when the metric is below this.")
    max: float | None = Field(default=None, description="fail when the metric is above this.")
    max_regression: float | None = Field(
        default=None,
        description="fail when the model is worse than the baseline by more than this (in the "
        "metric's units; lower is better for perplexity and loss, higher for the rest). For "
        "latency metrics a ratio of times: 0.1 fails a model more than 10 % slower than the "
        "baseline (ttft above 1.1 x the baseline's, or tokensPerSecond below the baseline's / "
        "1.1). Needs a baseline.",
        ge=0,
    )
    min_improvement: float | None = Field(
        default=None,
        description="fail unless the model is better than the baseline by at least this, in "
        "the same units and direction as maxRegression (0.5 on an exactMatch: at least 0.5 "
        "higher than the baseline's; 0.1 on a latency metric: at least 10 % faster). Needs a "
        "baseline.",
    )


NOT_ARCHITECTURE = Rule(
    rule="!has(self.architecture)",
    message="an evaluated model must have trained weights: use hub, volume or fromJob, not "
    "architecture",
    field_path=".architecture",
)


def perplexity_fits(model: str) -> Rule:
    """A rule for the spec: every perplexity evaluation's sequenceLength is at most the context
    length of `model` (model or baseline), when its shape is given. Both models see the same
    sequences, so each must be built for them. (The message names fields, not values: see
    `sequence_fits`.)"""
    default = Perplexity.model_fields["sequence_length"].default
    return Rule(
        rule=f"!(has(self.{model}) && has(self.{model}.shape)) || !self.evaluations.exists(e, "
        f"has(e.perplexity) && has(e.perplexity.sequenceLength) && "
        f"e.perplexity.sequenceLength > self.{model}.shape.contextLength)",
        message=f"every evaluations[].perplexity.sequenceLength ({default} when unset) must be at "
        f"most {model}.shape.contextLength, the longest sequence the {model} is built for: "
        "shorten the longer ones",
        field_path=".evaluations",
    )


class EvalJobSpec(RunControl):
    """What to evaluate, against what, and what must hold for the job to pass."""

    model_config = RunControl.model_config | {
        "json_schema_extra": rules(
            Rule(
                rule="!has(self.gates) || !self.gates.exists(g, has(g.maxRegression) || "
                "has(g.minImprovement)) || has(self.baseline)",
                message="a gate with maxRegression or minImprovement compares with the "
                "baseline: set baseline, or use min/max instead",
                field_path=".gates",
            ),
            Rule(
                rule="!has(self.gates) || self.gates.all(g, self.evaluations.exists(e, "
                "g.metric.startsWith(e.name + '.')))",
                message="every gate's metric must start with the name of one of the evaluations "
                "followed by a dot, e.g. 'held-out.perplexity'",
                field_path=".gates",
            ),
            Rule(
                rule="self.evaluations.all(e, self.evaluations.exists_one(f, f.name == e.name))",
                message="evaluation names must be unique",
                field_path=".evaluations",
            ),
            perplexity_fits("model"),
            perplexity_fits("baseline"),
        )
    }

    model: ModelSource = Field(
        description="the model to evaluate (the candidate, in an A/B comparison).",
        json_schema_extra=rules(
            exactly_one_of(*MODEL_SOURCE_FIELDS, what="model"),
            NOT_ARCHITECTURE,
            Rule(rule="self == oldSelf", message="model is immutable after creation"),
        ),
    )
    baseline: ModelSource | None = Field(
        default=None,
        description="a baseline evaluated on the same examples, for A/B comparison and "
        "maxRegression gates.",
        json_schema_extra=rules(
            exactly_one_of(*MODEL_SOURCE_FIELDS, what="baseline"),
            NOT_ARCHITECTURE,
        ),
    )
    evaluations: list[Evaluation] = Field(
        description="the evaluations to run.", min_length=1, max_length=32
    )
    gates: list[Gate] = Field(
        default_factory=list,
        description="conditions for the job to succeed; it fails with GatesFailed otherwise.",
        max_length=64,
    )
    resources: Resources = Field(
        default_factory=Resources, description="nodes and GPUs for the evaluation."
    )
    template: PodTemplate = Field(
        default_factory=PodTemplate, description="image, placement and additions for the pods."
    )
    tracking: Tracking | None = Field(default=None, description="Weights & Biases tracking.")
    output: VolumePath | None = Field(
        default=None, description="where to write results.json; kept in status only when unset."
    )


class LatencySetup(ApiModel):
    """How a latency metric was measured: two results compare only when these agree."""

    decoding: str = Field(description="decoding, e.g. greedy.")
    max_new_tokens: int = Field(description="new tokens per generation.")
    samples: int = Field(description="timed generations per model.")
    warmup: int = Field(description="generations before them, not timed.")
    device: str = Field(description="where both models ran, e.g. 'NVIDIA H100 80GB HBM3'.")


class MetricResult(ApiModel):
    """One metric of one evaluation."""

    evaluation: str = Field(description="evaluation name.")
    metric: str = Field(description="metric name, e.g. perplexity.")
    value: float = Field(description="the model's value.")
    baseline: float | None = Field(default=None, description="the baseline's value.")
    examples: int | None = Field(default=None, description="examples evaluated.")
    setup: LatencySetup | None = Field(
        default=None, description="for latency metrics: the decoding settings and sample count."
    )


class GateResult(ApiModel):
    """Whether one gate passed."""

    metric: str = Field(description="<evaluation>.<metric> the gate checks.")
    passed: bool = Field(description="whether it held.")
    message: str = Field(description="the values and the bound, in words.")


class EvalJobStatus(JobStatus):
    """Status of an EvalJob: the common status, plus results and gates."""

    results: list[MetricResult] = Field(
        default_factory=list, description="every metric of every evaluation."
    )
    gates: list[GateResult] = Field(default_factory=list, description="each gate's outcome.")
    gates_passed: str | None = Field(
        default=None, description="passed/total gates, for printer columns (e.g. '3/3')."
    )


class EvalJob(ApiModel):
    """EvalJob evaluates a model (perplexity, multiple-choice, exact-match,
    lm-evaluation-harness tasks, generation latency), optionally against a baseline, and passes
    or fails on gates."""

    model_config = ApiModel.model_config | {"frozen": False}

    api_version: Literal["trainkube.io/v1alpha1"] = "trainkube.io/v1alpha1"
    kind: Literal["EvalJob"] = "EvalJob"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: EvalJobSpec = Field(description="what the user asks for.")
    status: EvalJobStatus = Field(
        default_factory=EvalJobStatus,
        description="what the operator observed; written by it only.",
    )


__all__ = ["EvalJob", "EvalJobSpec", "EvalJobStatus", "Evaluation", "Gate"]
