"""Memory estimates: model states (by ZeRO stage and offload) and activations.

Model states, mixed precision (bf16/fp16 weights, fp32 master weights and AdamW states), in
bytes per parameter Ψ, on N = nodes x GPUs data-parallel ranks, largest module L parameters.
These are DeepSpeed's own estimators
(`deepspeed.runtime.zero.stage_1_and_2.estimate_zero2_model_states_mem_needs`,
`deepspeed.runtime.zero.stage3.estimate_zero3_model_states_mem_needs`, zero_init, buffer
factor 1.5); the tests compare with them. Stages 0 and 1 have no DeepSpeed estimator and follow
from the same accounting (16-bit weights 2, 16-bit gradients 2, fp32 gradients 4, fp32 master
weights 4, AdamW moments 8):

    stage 0             GPU 20Ψ                         CPU/node 4Ψ·g·1.5
    stage 1             GPU 4Ψ + 16Ψ/N                  CPU/node 4Ψ·g·1.5
    stage 2             GPU 2Ψ + 18Ψ/N                  CPU/node 4Ψ·g·1.5
    stage 2 + opt cpu   GPU 2Ψ                          CPU/node Ψ·max(4N, 16)·1.5
    stage 3             GPU 4L + 18Ψ/N                  CPU/node 4L·g·1.5
    stage 3 + opt cpu   GPU 4L + 2Ψ/N                   CPU/node 16Ψ/nodes·1.5
    stage 3 + all cpu   GPU 4L                          CPU/node 18Ψ/nodes·1.5
    stage 3 + opt nvme  GPU 4L + 2Ψ/N                   CPU/node 4L·g·1.5, NVMe/node 16Ψ/nodes
    + parameters cpu    GPU 4L                          CPU/node 2Ψ/nodes·1.5, NVMe/node 16Ψ/nodes
    stage 3 + all nvme  GPU 4L                          CPU/node 4L·g·1.5, NVMe/node 18Ψ/nodes

(g = GPUs per node). fp32 training has no master copy: weights 4, gradients 4, moments 8, so
stage 0 is 16Ψ, stage 1 8Ψ + 8Ψ/N, stage 2 4Ψ + 12Ψ/N, stage 3 4L + 16Ψ/N, and offloaded
parts move to the CPU the same way. With LoRA only the adapters (T parameters) carry gradients
and optimizer states; the frozen base weights take 2 (or 4) bytes each, divided by N at stage 3
and moved off the GPU with parameter offload.

Activations follow Korthikanti et al., "Reducing Activation Recomputation in Large Transformer
Models" (2022), for one micro-batch of b sequences of s tokens, hidden size h, MLP width I,
16-bit activations, no tensor parallelism, and attention through SDPA/FlashAttention (which
keeps no s x s score matrix, so the paper's 5·a·s²·b term is absent):

    per layer, stored for backward   s·b·(11h + 4h) + MLP,  MLP = s·b·(2h + 8I) gated (SwiGLU)
                                                               = s·b·(2h + 5I) GELU
    with activation checkpointing   2·s·b·h per layer, plus one layer recomputed at a time
    output head and loss            s·b·V·(2 + 4 + 4): 16-bit logits, their fp32 copy and its
                                    gradient

fp32 activations take twice the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from trainkube.planner.shape import Shape

GiB = 1024**3
MiB = 1024**2


def human_bytes(n: float) -> str:
    """Bytes for people: GiB from 1 GiB up, MiB below."""
    return f"{n / GiB:,.1f} GiB" if n >= GiB else f"{n / MiB:,.1f} MiB"


def human_count(n: float) -> str:
    """A parameter count for people: 6.74B, 125.1M, 92.4K."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))


BUFFER_FACTOR = 1.5  # DeepSpeed's additional_buffer_factor for CPU memory


class Device(StrEnum):
    NONE = "none"
    CPU = "cpu"
    NVME = "nvme"


@dataclass(frozen=True)
class Rung:
    """One step of the ladder the planner climbs: a ZeRO stage and where things are offloaded."""

    stage: int
    offload_optimizer: Device = Device.NONE
    offload_parameters: Device = Device.NONE

    def describe(self) -> str:
        parts = [f"ZeRO-{self.stage}"]
        if self.offload_optimizer is not Device.NONE:
            parts.append(f"optimizer on {self.offload_optimizer}")
        if self.offload_parameters is not Device.NONE:
            parts.append(f"parameters on {self.offload_parameters}")
        return ", ".join(parts)


# What the planner tries on its own, least communication first (the order DESIGN.md gives):
# stages 0-2 move as much data as plain data parallelism, stage 3 moves 1.5x, offload adds host
# transfers on top, NVMe slower ones still. Offload rungs are all stage 3, so more memory never
# yields a higher stage. When NVMe is needed, only what must move goes there: the optimizer
# states first (parameters stay on the GPU, or go to the host), the parameters only when the
# host cannot hold them either.
LADDER = (
    Rung(0),
    Rung(1),
    Rung(2),
    Rung(3),
    Rung(3, Device.CPU),
    Rung(3, Device.CPU, Device.CPU),
    Rung(3, Device.NVME),
    Rung(3, Device.NVME, Device.CPU),
    Rung(3, Device.NVME, Device.NVME),
)
# With one data-parallel rank ZeRO-3 has nothing to partition over: it only adds gathers and
# releases, and holds more on the GPU than the classic ZeRO-Offload (stage 2, optimizer on the
# CPU: 16-bit weights alone on the GPU). Stage 3 is taken there only to move the parameters
# off the GPU.
SINGLE_RANK_LADDER = (
    Rung(0),
    Rung(1),
    Rung(2),
    Rung(2, Device.CPU),
    *LADDER[5:],
)
# Every configuration a user may ask for, in the same order of preference: ZeRO-Offload at
# stages 1 and 2 too, which the planner picks by itself only for a single rank.
CONFIGURATIONS = (
    *LADDER[:4],
    Rung(1, Device.CPU),
    Rung(2, Device.CPU),
    *LADDER[4:],
)


def ladder(*, ranks: int, on_cpu: bool) -> tuple[Rung, ...]:
    """The rungs the planner climbs for `ranks` data-parallel ranks. A CPU job has no offload
    (its device memory is the host's), so only stages 0-3 remain."""
    if on_cpu:
        return tuple(r for r in LADDER if r.offload_optimizer is Device.NONE)
    return SINGLE_RANK_LADDER if ranks == 1 else LADDER


@dataclass(frozen=True)
class ModelStates:
    """Bytes of model states: per GPU by kind, per node on the CPU and on NVMe."""

    parameters: int
    gradients: int
    optimizer_states: int
    cpu_per_node: int
    nvme_per_node: int = 0

    @property
    def gpu_total(self) -> int:
        return self.parameters + self.gradients + self.optimizer_states


def model_states(
    *,
    rung: Rung,
    parameters: int,
    trainable: int,
    largest_layer: int,
    nodes: int,
    gpus_per_node: int,
    mixed_precision: bool,
) -> ModelStates:
    """Model-state memory of `rung` (see the module docstring for the formulas)."""
    ranks = nodes * max(gpus_per_node, 1)
    procs = max(gpus_per_node, 1)
    # Bytes per parameter: weights; the gradient backward writes (16-bit when mixed, else
    # fp32); the fp32 gradient copy the optimizer reads (mixed only); optimizer states (fp32
    # master weights and AdamW moments when mixed, moments only in fp32).
    w, g_full, g_fp32, opt = (2, 2, 4, 12) if mixed_precision else (4, 4, 0, 8)
    stage, rung_opt, rung_par = rung.stage, rung.offload_optimizer, rung.offload_parameters
    load_cpu = int(4 * parameters * procs * BUFFER_FACTOR)  # each rank loads the model
    gathered = 4 * largest_layer  # ZeRO-3 gathers one layer at a time
    zero_init_cpu = int(gathered * procs * BUFFER_FACTOR)

    if stage == 0:
        return ModelStates(w * parameters, (g_full + g_fp32) * trainable, opt * trainable, load_cpu)
    if stage == 1 and rung_opt is Device.NONE:
        grads = g_full * trainable + g_fp32 * trainable // ranks
        return ModelStates(w * parameters, grads, opt * trainable // ranks, load_cpu)
    if stage == 2 and rung_opt is Device.NONE:
        grads = (g_full + g_fp32) * trainable // ranks
        return ModelStates(w * parameters, grads, opt * trainable // ranks, load_cpu)
    if stage in (1, 2):  # ZeRO-Offload: gradients and optimizer on the CPU
        cpu = int(max(trainable * max(4 * ranks, 16), 4 * parameters * procs) * BUFFER_FACTOR)
        return ModelStates(w * parameters, 0, 0, cpu)
    if rung_opt is Device.NONE:
        grads = (g_fp32 or g_full) * trainable // ranks
        return ModelStates(
            gathered + w * parameters // ranks, grads, opt * trainable // ranks, zero_init_cpu
        )
    optimizer_host = (g_fp32 + opt) * trainable  # what optimizer offload moves
    if rung_opt is Device.CPU and rung_par is Device.NONE:
        cpu = int(optimizer_host / nodes * BUFFER_FACTOR)
        return ModelStates(gathered + w * parameters // ranks, 0, 0, cpu)
    host = w * parameters + optimizer_host + (0 if mixed_precision else 4 * trainable)
    if rung_opt is Device.CPU:  # parameters on the CPU too
        return ModelStates(gathered, 0, 0, int(host / nodes * BUFFER_FACTOR))
    # Optimizer on NVMe: its share of `host` goes there; the parameters stay on the GPU, go to
    # the host, or follow it to NVMe.
    if rung_par is Device.NONE:
        partitioned = gathered + w * parameters // ranks
        return ModelStates(partitioned, 0, 0, zero_init_cpu, nvme_per_node=optimizer_host // nodes)
    if rung_par is Device.CPU:
        cpu = int((host - optimizer_host) / nodes * BUFFER_FACTOR)
        return ModelStates(gathered, 0, 0, cpu, nvme_per_node=optimizer_host // nodes)
    return ModelStates(gathered, 0, 0, zero_init_cpu, nvme_per_node=host // nodes)


def activations(
    *,
    shape: Shape,
    sequence: int,
    micro_batch: int,
    checkpointing: bool,
    fp32: bool,
) -> int:
    """Activation bytes of one micro-batch on one GPU (see the module docstring)."""
    s, b, h, i = sequence, micro_batch, shape.hidden, shape.intermediate
    mlp = 2 * h + (8 * i if shape.gated else 5 * i)
    per_layer = s * b * (15 * h + mlp)
    head = s * b * shape.vocab * 10
    # Checkpointing keeps each layer's input and recomputes one layer at a time.
    stored = shape.layers * 2 * s * b * h + per_layer if checkpointing else shape.layers * per_layer
    total = stored + head
    return 2 * total if fp32 else total
