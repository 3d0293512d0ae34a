"""A job and its plan, as the trainer's run config plus what the pod must mount for it.

Pure: the operator resolves what lies outside the job (other jobs' outputs) and passes it in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from trainkube.api.data import Data
from trainkube.api.evaljob import EvalJob
from trainkube.api.finetunejob import FineTuneJob, FineTuneJobSpec, Lora, Method
from trainkube.api.llmtrainingjob import LLMTrainingJob, LLMTrainingJobSpec
from trainkube.api.model import ModelSource
from trainkube.api.recovery import Rollback
from trainkube.api.refs import JobOutputRef, VolumePath
from trainkube.api.status import Output as OutputStatus
from trainkube.api.tracking import Tracking
from trainkube.controller import interval, layout, naming
from trainkube.planner.plan import Plan as PlannerPlan
from trainkube.runconfig import (
    CheckpointPolicy,
    DataRef,
    EvalTask,
    Evaluation,
    Fault,
    Files,
    InProcessRollback,
    ModelRef,
    Output,
    Plan,
    Recovery,
    Reporting,
    RunConfig,
    Task,
)
from trainkube.runconfig import Tracking as RunTracking

Job = LLMTrainingJob | FineTuneJob | EvalJob
# The output another job published (its status.output), or None when it has none yet.
OutputResolver = Callable[[JobOutputRef], OutputStatus | None]


class InputNotReady(Exception):  # noqa: N818 - a state, not a failure
    """A job this one depends on has not published its output yet."""


@dataclass
class WorkerSpec:
    """The run config and everything the worker pod must mount for it."""

    run_config: RunConfig
    claims: list[layout.ClaimMount] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)  # secret name -> key
    output: OutputStatus | None = None  # what status.output becomes on success

    def mount(self, claim: str, root: str, *, read_only: bool) -> None:
        path = str(PurePosixPath(root) / claim)
        if not any(c.mount_path == path for c in self.claims):
            self.claims.append(layout.ClaimMount(claim, path, read_only))

    def writable(self, where: VolumePath, mount_path: str) -> str:
        """The folder `where` to write into: its claim mounted whole (at `mount_path`, or where
        it already is writable), never by subPath. A subPath folder that does not exist yet is
        made by the kubelet as root, and a non-root trainer could not write into it; the
        trainer makes the folders itself."""
        mounted = next(
            (c for c in self.claims if c.claim == where.claim_name and not c.read_only), None
        )
        if mounted is None:
            mounted = layout.ClaimMount(where.claim_name, mount_path, False)
            self.claims.append(mounted)
        return str(PurePosixPath(mounted.mount_path) / (where.path or ""))


def _model_ref(
    source: ModelSource, spec: WorkerSpec, resolve: OutputResolver, *, field_name: str
) -> ModelRef:
    token = None
    if source.token_secret_ref is not None:
        spec.secrets[source.token_secret_ref.name] = source.token_secret_ref.key
        token = layout.secret_file(source.token_secret_ref.name, source.token_secret_ref.key)
    common = ModelRef(dtype=source.dtype, token_file=token, tokenizer_hub=source.tokenizer)
    if source.tokenizer_volume is not None:
        volume = source.tokenizer_volume
        spec.mount(volume.claim_name, layout.MODELS_ROOT, read_only=True)
        tokenizer = layout.model_path(volume.claim_name, volume.path)
        common = common.model_copy(update={"tokenizer_path": tokenizer})
    if source.hub is not None:
        return common.model_copy(update={"hub": source.hub})
    if source.architecture is not None:
        return common.model_copy(update={"architecture": source.architecture})
    if source.volume is not None:
        spec.mount(source.volume.claim_name, layout.MODELS_ROOT, read_only=True)
        path = layout.model_path(source.volume.claim_name, source.volume.path)
        return common.model_copy(update={"path": path})
    assert source.from_job is not None
    ref = source.from_job
    output = resolve(ref)
    if output is None or (output.model_path is None and output.adapter_path is None):
        raise InputNotReady(f"{field_name}.fromJob: waiting for {ref.kind} {ref.name!r} to succeed")
    if output.model_path is not None:
        claim, path = layout.split_location(output.model_path)
        spec.mount(claim, layout.MODELS_ROOT, read_only=True)
        return common.model_copy(update={"path": layout.model_path(claim, path)})
    raise InputNotReady(
        f"{field_name}.fromJob: {ref.kind} {ref.name!r} wrote a LoRA adapter without a merged "
        "model; set its output.merge to true so other jobs can use it"
    )


def _data(data: Data, spec: WorkerSpec) -> DataRef:
    files = None
    if data.files is not None:
        spec.mount(data.files.claim_name, layout.DATA_ROOT, read_only=True)
        files = Files(
            path=layout.data_path(data.files.claim_name, data.files.path), format=data.files.format
        )
    return DataRef(
        hub=data.hub,
        files=files,
        builtin=data.builtin,
        text_field=data.text_field,
        prompt_field=data.prompt_field,
        response_field=data.response_field,
        sequence_length=data.sequence_length,
        validation_fraction=data.validation_fraction,
    )


def _tracking(tracking: Tracking | None, spec: WorkerSpec, run_id: str) -> RunTracking | None:
    if tracking is None:
        return None
    key_file = None
    if tracking.api_key_secret_ref is not None:
        spec.secrets[tracking.api_key_secret_ref.name] = tracking.api_key_secret_ref.key
        key_file = layout.secret_file(
            tracking.api_key_secret_ref.name, tracking.api_key_secret_ref.key
        )
    return RunTracking(
        project=tracking.project,
        entity=tracking.entity,
        mode=tracking.mode,
        api_key_file=key_file,
        run_id=run_id,
        directory=layout.REPORT_DIR,
    )


def checkpoint_location(job: LLMTrainingJob | FineTuneJob) -> VolumePath | None:
    """The claim and folder of the job's checkpoints (None: the job keeps none)."""
    checkpoints = job.spec.checkpoints
    if checkpoints.volume is not None:
        return checkpoints.volume
    if checkpoints.create_volume is not None:
        name = str(job.metadata["name"])
        return VolumePath(claim_name=naming.checkpoint_claim_name(job.kind, name))
    return None


def _output_location(
    configured: VolumePath | None, checkpoints: VolumePath | None
) -> VolumePath | None:
    if configured is not None:
        return configured
    if checkpoints is not None:
        return VolumePath(
            claim_name=checkpoints.claim_name,
            path=str(PurePosixPath(checkpoints.path or ".") / "final"),
        )
    return None


@dataclass(frozen=True)
class Attempt:
    """What differs between attempts of one job."""

    number: int = 1
    lr_factor: float = 1.0
    skip_batches: tuple[tuple[int, int], ...] = ()
    resume_step: int | None = None
    fresh_start: bool = False
    rollback_to: int | None = None  # a rollback attempt: the step it goes back to
    mtbf_seconds: float | None = None  # interval auto: the MTBF refined by the job's history
    rollbacks_left: int = 0  # of maxRollbacks, for a rollback in the running workers


def worker_spec(
    job: Job,
    *,
    namespace: str,
    plan: PlannerPlan | None,
    attempt: Attempt,
    resolve: OutputResolver,
) -> WorkerSpec:
    """The run config of one attempt of `job`, and the mounts and Secrets its pods need."""
    name = str(job.metadata["name"])
    reporting = Reporting(
        directory=layout.REPORT_DIR,
        configmap=naming.report_name(job.kind, name),
        namespace=namespace,
    )
    spec = WorkerSpec(
        run_config=RunConfig(
            task=Task.EVAL, job=f"{namespace}/{name}", model=ModelRef(), reporting=reporting
        )
    )
    if isinstance(job, EvalJob):
        return _eval_spec(job, spec, resolve, attempt)
    assert plan is not None
    js: LLMTrainingJobSpec | FineTuneJobSpec = job.spec
    lora: Lora | None = None
    if isinstance(js, LLMTrainingJobSpec):
        model = _model_ref(js.model, spec, resolve, field_name="spec.model")
        task, method, merge, configured = Task.PRETRAIN, "full", False, js.output
    else:
        model = _model_ref(js.base_model, spec, resolve, field_name="spec.baseModel")
        lora_method = js.method is Method.LORA
        task, method = Task.FINETUNE, "lora" if lora_method else "full"
        lora = (js.lora or Lora()) if lora_method else None
        merge = bool(js.output and js.output.merge)
        configured = js.output.volume if js.output else None
    checkpoints = checkpoint_location(job)
    output = _output_location(configured, checkpoints)
    policy = None
    if checkpoints is not None:
        policy = CheckpointPolicy(
            directory=spec.writable(checkpoints, layout.CHECKPOINTS),
            # auto: the trainer chooses (Young-Daly) for the MTBF given; 500 until it can.
            interval=js.checkpoints.interval if isinstance(js.checkpoints.interval, int) else 500,
            auto_mtbf_seconds=None
            if isinstance(js.checkpoints.interval, int)
            else interval.prior_seconds(js.checkpoints.mtbf_hours, job.spec.resources.nodes),
            keep_last=js.checkpoints.keep_last,
            keep_every=js.checkpoints.keep_every,
            resume=not attempt.fresh_start,
            resume_step=attempt.resume_step,
        )
    run_output = None
    if output is not None:
        run_output = Output(directory=spec.writable(output, layout.OUTPUT), merge=merge)
        place = f"{output.claim_name}:{PurePosixPath(output.path or '.')}"
        writes_model = method == "full" or merge
        spec.output = OutputStatus(
            model_path=f"{place}/model" if writes_model else None,
            adapter_path=f"{place}/adapter" if method == "lora" else None,
        )
    spec.run_config = spec.run_config.model_copy(
        update={
            "task": task,
            "attempt": attempt.number,
            "seed": js.training.seed,
            "model": model,
            "data": _data(js.data, spec),
            "training": js.training,
            "method": method,
            "lora": lora,
            "plan": Plan(
                deepspeed=plan.deepspeed_config,
                activation_checkpointing=plan.activation_checkpointing,
                zero_stage=plan.rung.stage,
            ),
            "checkpoints": policy,
            "divergence": js.rollback.rule if js.rollback.enabled else None,
            "recovery": Recovery(
                lr_factor=attempt.lr_factor, skip_batches=list(attempt.skip_batches)
            ),
            "rollback": _in_process(js.rollback, attempt),
            "output": run_output,
            "tracking": _tracking(js.tracking, spec, run_id=f"{namespace}-{name}"),
            "reporting": reporting.model_copy(
                update={"hang_timeout_seconds": js.failure_policy.hang_timeout_seconds}
            ),
        }
    )
    return spec


def _in_process(policy: Rollback, attempt: Attempt) -> InProcessRollback | None:
    """What the trainer needs to roll back by itself, when the spec lets it."""
    if not (policy.enabled and policy.in_process):
        return None
    return InProcessRollback(
        steps_back=policy.steps_back,
        lr_factor=policy.lr_factor,
        skip_batches=policy.skip_batches,
        rollbacks_left=attempt.rollbacks_left,
    )


def _eval_spec(
    job: EvalJob, spec: WorkerSpec, resolve: OutputResolver, attempt: Attempt
) -> WorkerSpec:
    js = job.spec
    model = _model_ref(js.model, spec, resolve, field_name="spec.model")
    baseline = (
        _model_ref(js.baseline, spec, resolve, field_name="spec.baseline") if js.baseline else None
    )
    for evaluation in js.evaluations:
        sources = (
            evaluation.perplexity,
            evaluation.multiple_choice,
            evaluation.exact_match,
            evaluation.latency,
        )
        for source in sources:
            if source is not None and source.files is not None:
                spec.mount(source.files.claim_name, layout.DATA_ROOT, read_only=True)
        if evaluation.harness is not None and evaluation.harness.include_path is not None:
            spec.mount(evaluation.harness.include_path.claim_name, layout.DATA_ROOT, read_only=True)
    run_output = None
    if js.output is not None:
        run_output = Output(directory=spec.writable(js.output, layout.OUTPUT))
        place = f"{js.output.claim_name}:{PurePosixPath(js.output.path or '.')}"
        spec.output = OutputStatus(results_path=f"{place}/results.json")
    spec.run_config = spec.run_config.model_copy(
        update={
            "attempt": attempt.number,
            "model": model,
            "evaluation": Evaluation(
                evaluations=[EvalTask.model_validate(e.model_dump()) for e in js.evaluations],
                gates=js.gates,
                baseline=baseline,
                data_root=layout.DATA_ROOT,
            ),
            "output": run_output,
            "tracking": _tracking(
                js.tracking, spec, run_id=f"{spec.run_config.job.replace('/', '-')}"
            ),
        }
    )
    return spec


def for_attempt(
    spec: WorkerSpec, attempt: Attempt, plan: PlannerPlan | None, fault: Fault | None
) -> WorkerSpec:
    """`spec` (built for the job) made into the run config of one attempt: its number, where it
    resumes, the learning-rate factor and skipped batches it inherits, its plan (after
    out-of-memory escalations) and any fault a test asked for."""
    config = spec.run_config
    update: dict[str, object] = {"attempt": attempt.number, "fault": fault}
    if config.checkpoints is not None:
        update["checkpoints"] = config.checkpoints.model_copy(
            update={
                "resume": not attempt.fresh_start,
                "resume_step": attempt.resume_step,
                "abandon_after": attempt.rollback_to,
                "auto_mtbf_seconds": attempt.mtbf_seconds
                if config.checkpoints.auto_mtbf_seconds is not None and attempt.mtbf_seconds
                else config.checkpoints.auto_mtbf_seconds,
            }
        )
    if config.recovery is not None:
        update["recovery"] = Recovery(
            lr_factor=attempt.lr_factor, skip_batches=list(attempt.skip_batches)
        )
    if config.rollback is not None:
        update["rollback"] = config.rollback.model_copy(
            update={"rollbacks_left": attempt.rollbacks_left}
        )
    if plan is not None and config.plan is not None:
        update["plan"] = Plan(
            deepspeed=plan.deepspeed_config,
            activation_checkpointing=plan.activation_checkpointing,
            zero_stage=plan.rung.stage,
        )
    return WorkerSpec(
        run_config=config.model_copy(update=update),
        claims=spec.claims,
        secrets=spec.secrets,
        output=spec.output,
    )
