"""How big a model is and how much memory and compute a training stage needs: estimates.

The figures are arithmetic on the model's shape (`Shape`, read from a model built on torch's
meta device, so an 8B model costs nothing to describe) and on the stage's settings (batch,
sequence length, adapter, dtype, gradient checkpointing). They are checked against measured
probes (`ftp.planning.probe`) in tests and in docs/choosing-a-model.md.

Nothing here imports torch at import time.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

GIB = 1024 ** 3


@dataclass
class Shape:
    """A model's size and complexity, as reported per candidate.

    Attributes:
        parameters: Every parameter, counted once (tied embeddings once).
        trainable: Parameters trained under the stage's adapter (all without one).
        architecture: The model class, e.g. ``LlamaForCausalLM``.
        layers: Transformer layers.
        hidden_size: Width of the residual stream.
        intermediate_size: Width of the MLP.
        heads: Attention heads.
        context_length: The longest sequence the model's positions allow (None: unknown).
        vocabulary: Tokens in the vocabulary.
        attention: The attention implementation (``sdpa``, ``eager``...).
        embedding_parameters: Parameters of the input embeddings and, when untied, the LM
            head (4-bit quantization leaves them in full precision).
        model_type: The config's ``model_type`` (``llama``, ``bert``...).
        lean_mlps: MLPs that training runs through `ftp.gated_mlp` (a plain gated SiLU
            MLP keeps its gate and up outputs only).

    """

    parameters: int
    trainable: int
    architecture: str
    layers: int
    hidden_size: int
    intermediate_size: int
    heads: int
    context_length: int | None
    vocabulary: int
    attention: str = "sdpa"
    embedding_parameters: int = 0
    model_type: str = ""
    lean_mlps: int = 0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


def shape_of(model: Any, adapted: Any | None = None) -> Shape:
    """Read the `Shape` of ``model`` (on any device, meta included).

    Args:
        model: The model as loaded (before any adapter).
        adapted: The same model wrapped by the provider's adapter, or None for full finetuning.

    """
    from ftp.gated_mlp import is_plain_gated_silu

    config = model.config
    # Multimodal configs keep the language model's settings in a text config.
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    total = sum(p.numel() for p in model.parameters())
    if adapted is None:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    else:
        trainable = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
    hidden = int(_first(text, "hidden_size", "n_embd", "d_model", default=0))
    tables = {id(m.weight): m.weight.numel()
              for m in (model.get_input_embeddings(), model.get_output_embeddings())
              if m is not None and getattr(m, "weight", None) is not None}
    return Shape(
        parameters=int(total),
        trainable=int(trainable),
        architecture=type(model).__name__,
        layers=int(_first(text, "num_hidden_layers", "n_layer", "num_layers", default=0)),
        hidden_size=hidden,
        intermediate_size=int(_first(text, "intermediate_size", "n_inner", "ffn_dim",
                                     default=4 * hidden) or 4 * hidden),
        heads=int(_first(text, "num_attention_heads", "n_head", default=0)),
        context_length=_first(text, "max_position_embeddings", "n_positions", default=None),
        vocabulary=int(_first(text, "vocab_size", default=0)),
        attention=str(getattr(config, "_attn_implementation", None) or "sdpa"),
        embedding_parameters=int(sum(tables.values())),
        model_type=str(getattr(config, "model_type", "") or ""),
        lean_mlps=sum(1 for m in model.modules() if is_plain_gated_silu(m)),
    )


def _first(config: Any, *names: str, default: Any) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


@dataclass
class Setting:
    """What a stage trains with, as far as memory and compute go.

    Attributes:
        batch: Rows per step (per device; gradient accumulation does not add to memory).
        sequence: Tokens of the longest sequence a step holds (after truncation; cpt: the
            block size).
        sequences_per_row: Sequences a row becomes (2 for a preference pair, chosen and
            rejected in one forward pass).
        adapter: Whether an adapter trains (only ``Shape.trainable`` parameters get
            gradients and optimizer state).
        weight_bytes: Bytes per weight as loaded (4 for float32, 2 for bfloat16/float16).
        autocast_bf16: Whether training runs under bf16 autocast (activations in 2 bytes).
        frozen_bf16: Whether frozen weights are held in bf16 while training.
        gradient_checkpointing: Activations recomputed in the backward pass.
        causal_lm: Whether the model predicts tokens (the logits over the vocabulary cost
            memory) rather than a class.
        reference: Whether a frozen reference copy of the weights is held (DPO without an
            adapter).
        lora_dropout: Whether the adapter's dropout copies each adapted layer's input.
        logit_fraction: The share of positions projected onto the vocabulary (sft's
            padding-free loss projects only positions that predict a labelled token).
        quantized_4bit: QLoRA: the base weights held in 4 bits (nf4 with double quantization,
            about 4.5 bits per weight with its constants), embeddings and LM head excepted.
        head_chunk: Positions a chunk where the method projects onto the vocabulary and
            takes its loss a chunk at a time (`ftp.Method.head_chunk`); None: all at once.

    """

    batch: int
    sequence: int
    sequences_per_row: int = 1
    adapter: bool = False
    weight_bytes: int = 4
    autocast_bf16: bool = False
    frozen_bf16: bool = False
    gradient_checkpointing: bool = False
    causal_lm: bool = True
    reference: bool = False
    lora_dropout: bool = False
    logit_fraction: float = 1.0
    quantized_4bit: bool = False
    head_chunk: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


@dataclass
class MemoryEstimate:
    """Estimated peak memory of one training step, in bytes, by part.

    The libraries' own memory (torch, transformers: a few hundred MB on CPU, the CUDA context
    on a GPU) is not included: `ftp.planning.probe` measures above that same baseline.
    """

    weights: int
    gradients: int
    optimizer: int
    activations: int
    logits: int
    reference: int = 0
    parts: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """The sum of the parts."""
        return (self.weights + self.gradients + self.optimizer + self.activations
                + self.logits + self.reference)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy, with the total."""
        return {**asdict(self), "total": self.total}


def estimate_memory(shape: Shape, setting: Setting) -> MemoryEstimate:
    """Peak memory of a training step of a model of ``shape`` under ``setting``.

    - weights: every parameter at its bytes (2 when frozen weights are held in bf16 under
      an adapter, else as loaded);
    - gradients and AdamW's two moments: for the trained parameters only, in float32 under an
      adapter (peft keeps adapter weights in float32), else in the weights' dtype;
    - activations kept for the backward pass, per token and layer (a Llama-like block): the
      two norms' inputs, statistics and outputs, q/k/v before and after the rotary embedding
      and its rotated copies, the attention output and its reshaped copy (about 12 × hidden),
      the MLP's gate, up, activation and product (4 × intermediate; 3 where training runs
      the MLP through `ftp.gated_mlp`, which recomputes the activation), the adapter dropout's
      copies of each adapted layer's input (6 × hidden + intermediate), and under eager
      attention the heads × sequence probabilities. With gradient checkpointing only each
      layer's input is kept, plus one layer recomputed;
    - the logits over the vocabulary (causal LMs), at the positions projected: in the compute
      dtype, their float32 copy for the loss (under bf16), the log-softmax the loss keeps, and
      the gradient. A method that takes the loss a chunk at a time holds one chunk's float32
      logits and the softmax computed from them, and keeps none for backward.
    """
    s = setting
    tokens = s.batch * s.sequences_per_row * s.sequence
    act_bytes = 2 if s.autocast_bf16 else s.weight_bytes
    held = 2 if (s.adapter and s.frozen_bf16 and s.autocast_bf16) else s.weight_bytes
    weights: float = shape.parameters * held
    if s.quantized_4bit:
        dense = shape.embedding_parameters
        weights = (shape.parameters - dense) * 4.5 / 8 + dense * held
    if s.adapter:
        train_bytes = 4
        weights += shape.trainable * (4 - held)  # adapter weights stay in float32
    else:
        train_bytes = s.weight_bytes
    gradients = shape.trainable * train_bytes
    optimizer = 2 * shape.trainable * train_bytes
    h, i, n = shape.hidden_size, shape.intermediate_size, shape.layers
    per_layer = 12 * h + (3 if shape.lean_mlps >= n > 0 else 4) * i
    if s.adapter and s.lora_dropout:
        per_layer += 6 * h + i
    if shape.attention == "eager":
        per_layer += 2 * shape.heads * s.sequence
    if s.gradient_checkpointing:
        activations = tokens * (n * h + per_layer) * act_bytes
    else:
        activations = tokens * n * per_layer * act_bytes
    per_logit = act_bytes + 8 + (4 if act_bytes < 4 else 0)
    projected = tokens * s.logit_fraction
    if s.head_chunk:
        projected, per_logit = min(projected, s.head_chunk), 8
    logits = projected * shape.vocabulary * per_logit if s.causal_lm else 0
    reference = shape.parameters * s.weight_bytes if s.reference else 0
    what = "4 bits (nf4)" if s.quantized_4bit else "bf16" if held == 2 else f"{held}-byte"
    return MemoryEstimate(
        weights=int(weights), gradients=int(gradients), optimizer=int(optimizer),
        activations=int(activations), logits=int(logits), reference=int(reference),
        parts={"weights": f"{shape.parameters:,} parameters in {what}",
               "activations": f"{s.batch} × {s.sequences_per_row} × {s.sequence} tokens, "
               f"{n} layers{', checkpointed' if s.gradient_checkpointing else ''}"},
    )


def training_flops(shape: Shape, tokens: int, adapter: bool) -> float:
    """FLOPs of training on ``tokens`` tokens.

    6 per parameter and token (forward 2, backward 4); under an adapter the frozen weights'
    own gradients are not computed (4 per parameter and token).
    """
    return (4.0 if adapter else 6.0) * shape.parameters * tokens


def gib(n_bytes: float | None) -> str:
    """``n_bytes`` as ``1.23 GiB``, or ``45.6 MiB`` below one GiB (``unknown`` for None)."""
    if n_bytes is None or (isinstance(n_bytes, float) and math.isnan(n_bytes)):
        return "unknown"
    if abs(n_bytes) < GIB:
        return f"{n_bytes / 1024 ** 2:.1f} MiB"
    return f"{n_bytes / GIB:.2f} GiB"
