"""Parameter counts of decoder-only transformers, from their shape.

The counts follow the transformers implementations of each family (untied input and output
embeddings; gated SiLU MLP for llama, mistral and qwen2; GELU MLP with biases and LayerNorm for
gpt_neox; q/k/v biases for qwen2). Llama-2-7B's shape gives 6,738,415,616 parameters, the
number its checkpoint has.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainkube.api.model import Architecture, ArchitectureFamily

GATED = frozenset({ArchitectureFamily.LLAMA, ArchitectureFamily.MISTRAL, ArchitectureFamily.QWEN2})
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class Shape:
    """The numbers the planner needs about a model."""

    family: ArchitectureFamily
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def gated(self) -> bool:
        return self.family in GATED

    def layer_parameters(self) -> int:
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        attention = 2 * h * h + 2 * h * kv
        if self.family == ArchitectureFamily.QWEN2:
            attention += h + 2 * kv  # q, k and v projections carry biases
        if self.family == ArchitectureFamily.GPT_NEOX:
            attention += 2 * h + 2 * kv  # every projection carries a bias
            mlp = 2 * h * i + i + h
            norms = 4 * h  # two LayerNorms with weight and bias
        else:
            mlp = 3 * h * i
            norms = 2 * h  # two RMSNorms
        return attention + mlp + norms

    def parameters(self) -> int:
        final_norm = 2 * self.hidden if self.family == ArchitectureFamily.GPT_NEOX else self.hidden
        embeddings = 2 * self.vocab * self.hidden  # input embedding and untied output head
        return embeddings + self.layers * self.layer_parameters() + final_norm

    def largest_layer_parameters(self) -> int:
        """The largest single module (what ZeRO-3 gathers at once): usually the embedding."""
        return max(self.vocab * self.hidden, self.hidden * self.intermediate, self.hidden**2)

    def lora_parameters(self, *, rank: int, targets: tuple[str, ...]) -> int:
        """Trainable parameters of LoRA adapters of rank `rank` on the named modules."""
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        sizes = {
            "q_proj": (h, h),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (h, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
            "query_key_value": (h, h + 2 * kv),
            "dense": (h, h),
            "dense_h_to_4h": (h, i),
            "dense_4h_to_h": (i, h),
        }
        unknown = [t for t in targets if t not in sizes]
        if unknown:
            known = ", ".join(sizes)
            raise ValueError(f"unknown LoRA target modules {unknown}: known are {known}")
        per_layer = sum(rank * (sizes[t][0] + sizes[t][1]) for t in targets)
        return self.layers * per_layer


def default_intermediate(family: ArchitectureFamily, hidden: int) -> int:
    """The MLP width the family uses when none is given."""
    if family in GATED:
        width = int(8 * hidden / 3)
        return -(-width // 256) * 256  # rounded up to a multiple of 256, as Llama does
    return 4 * hidden


def shape_of(architecture: Architecture) -> Shape:
    """The planner's view of an architecture from a manifest."""
    return Shape(
        family=architecture.family,
        layers=architecture.layers,
        hidden=architecture.hidden_size,
        heads=architecture.heads,
        kv_heads=architecture.kv_heads or architecture.heads,
        intermediate=architecture.intermediate_size
        or default_intermediate(architecture.family, architecture.hidden_size),
        vocab=architecture.vocab_size,
    )
