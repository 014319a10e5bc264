"""What the built-in methods share: training arguments and a trainer that logs progress."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field

from ftp import RunError, StrictConfig, TrainContext


class TrainingOptions(StrictConfig):
    """Options every built-in trainer-based method accepts (TRL/transformers names in brackets)."""

    epochs: float = Field(3.0, gt=0, description="Passes over the data [num_train_epochs].")
    max_steps: int = Field(-1, description="Stop after this many steps; overrides epochs if > 0.")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    batch_size: int = Field(8, gt=0, description="Per-device batch size.")
    gradient_accumulation: int = Field(
        1, gt=0, description="Batches summed per optimizer step [gradient_accumulation_steps]."
    )
    warmup: float = Field(0.0, ge=0, description="Warmup: a fraction of steps (< 1) or steps.")
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="Learning-rate schedule after warmup [lr_scheduler_type]."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradients are clipped to this norm.")
    optimizer: str = Field("adamw_torch", description="A transformers optimizer name.")
    logging_steps: int = Field(5, gt=0, description="Log loss and speed every N steps.")
    save_strategy: Literal["no", "epoch", "steps"] = Field(
        "no", description="Write trainer checkpoints under stages/NAME/checkpoints."
    )
    save_steps: int = Field(500, gt=0, description="With save_strategy = 'steps': every N.")
    bf16: bool | None = Field(
        None, description="bfloat16 mixed precision; default: on where the hardware computes "
        "bf16 natively (recent GPUs; CPUs with AVX512-BF16 or AMX)."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, slower."
    )
    frozen_bf16: bool = Field(
        True, description="With an adapter and bf16: hold the frozen base weights in bf16 "
        "while training (less memory, faster); the exact originals are put back afterwards."
    )


def training_arguments(opts: TrainingOptions, ctx: TrainContext, config_cls: Any,
                       **extra: Any) -> Any:
    """Build TRL/transformers arguments from ftp's options."""
    import torch

    on_gpu = torch.cuda.is_available() and next(ctx.model.parameters()).is_cuda
    bf16 = opts.bf16 if opts.bf16 is not None else native_bf16(on_gpu)
    return config_cls(
        output_dir=str(ctx.output_dir),
        num_train_epochs=opts.epochs,
        max_steps=opts.max_steps,
        learning_rate=opts.learning_rate,
        per_device_train_batch_size=opts.batch_size,
        per_device_eval_batch_size=opts.batch_size,
        gradient_accumulation_steps=opts.gradient_accumulation,
        warmup_steps=opts.warmup,
        lr_scheduler_type=opts.scheduler,
        weight_decay=opts.weight_decay,
        max_grad_norm=opts.max_grad_norm,
        optim=opts.optimizer,
        logging_steps=opts.logging_steps,
        save_strategy=opts.save_strategy,
        save_steps=opts.save_steps,
        bf16=bf16,
        # TRL refuses bf16 on CPU unless told it is on CPU on purpose.
        use_cpu=not on_gpu,
        activation_checkpointing=opts.gradient_checkpointing,
        seed=ctx.seed,
        data_seed=ctx.seed,
        report_to="none",
        disable_tqdm=True,
        # Padding-free rows have no padding, and pad == EOS in many tokenizers, so
        # "non_padding" would not count the EOS tokens that are trained on.
        include_num_input_tokens_seen="all" if opts_padding_free(opts) else "non_padding",
        dataloader_num_workers=0,
        remove_unused_columns=False,
        **extra,
    )


def opts_padding_free(opts: TrainingOptions) -> bool:
    """Whether a method's options ask for padding-free batches."""
    return bool(getattr(opts, "padding_free", False))


def native_bf16(on_gpu: bool) -> bool:
    """Whether bf16 autocast is a speed-up here, not an emulation that slows training.

    Measured on a 2-core AVX512-BF16 CPU, the quickstart (SmolLM2-135M, LoRA) trained at
    ~165 tokens/s in fp32 and ~355 with bf16 autocast plus the labelled-position loss; on CPUs
    without native bf16, autocast emulates it and is slower than fp32.
    """
    import torch

    if on_gpu:
        return torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def trained_model(trainer: Any) -> Any:
    """The trained model without accelerate's mixed-precision forward wrapper.

    Under bf16, accelerate wraps ``forward`` in autocast; left on, evaluations after training
    would run in bf16 while those before ran in the model's own precision.
    """
    return trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)


def quiet_trainer(trainer: Any) -> Any:
    """Drop transformers' own printing: ftp's progress callback shows the same, once."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def use_all_cores() -> None:
    """Accelerate may leave one thread per process on CPU; use every core unless told not to."""
    import torch

    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)


def loss_on_labelled_positions(model: Any, inputs: dict[str, Any],
                               num_items_in_batch: Any = None) -> Any:
    """Causal-LM loss that projects onto the vocabulary only where a label is set.

    The LM head and softmax over a 49k vocabulary cost about a fifth of a small model's step,
    and most positions of an SFT batch (system prompt, question) carry no label. With one
    padding-free row, only the positions that predict a labelled token are projected
    (``logits_to_keep``); the loss is the same sum of token cross-entropies, divided by the
    number of labelled tokens in the whole (accumulated) batch, as the model's own loss.
    """
    import torch.nn.functional as F

    inputs = dict(inputs)
    labels = inputs.pop("labels")
    targets_all = labels[:, 1:]
    keep_mask = targets_all != -100
    if labels.size(0) == 1:
        keep = keep_mask[0].nonzero().flatten()
        logits = model(**inputs, logits_to_keep=keep).logits[0]
        targets = targets_all[0, keep]
    else:
        logits = model(**inputs).logits[:, :-1][keep_mask]
        targets = targets_all[keep_mask]
    loss = F.cross_entropy(logits.float(), targets, reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else keep_mask.sum()
    return loss / torch_clamp_min(count, 1)


def torch_clamp_min(value: Any, minimum: int) -> Any:
    """``max(value, minimum)`` for a tensor or an int (a batch without labels gives 0 / 1)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.clamp(min=minimum)
    return max(int(value), minimum)


@contextlib.contextmanager
def frozen_weights_in_bf16(model: Any, enabled: bool) -> Iterator[None]:
    """Hold a model's frozen (non-adapter) weights in bf16 for the duration of training.

    Under bf16 autocast the matmuls run in bf16 anyway; keeping the frozen weights there
    halves their memory and saves the per-step casts. Trainable parameters (the adapter) stay
    in full precision for the optimizer. The exact original weights are spilled to a
    temporary safetensors file and put back afterwards (also on failure), so the merged and
    saved model differs from the base only by what the adapter learned.
    """
    import tempfile

    import torch
    from safetensors.torch import load_file, save_file

    if not enabled:
        yield
        return
    frozen = {name: p for name, p in model.named_parameters()
              if not p.requires_grad and p.is_floating_point() and p.dtype != torch.bfloat16}
    if not frozen:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="ftp-frozen-") as tmp:
        spill = f"{tmp}/frozen.safetensors"
        save_file({name: p.data.contiguous() for name, p in frozen.items()}, spill)
        for p in frozen.values():
            p.data = p.data.to(torch.bfloat16)
        try:
            yield
        finally:
            originals = load_file(spill, device=str(next(iter(frozen.values())).device))
            for name, p in frozen.items():
                p.data = originals[name]


@contextlib.contextmanager
def explain_out_of_memory(lower: str) -> Iterator[None]:
    """Turn an out-of-memory error into a `RunError` saying what to ``lower``."""
    try:
        yield
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            raise RunError(f"out of memory: lower {lower}, or use an adapter") from exc
        raise


def run_trainer(trainer: Any, model: Any, frozen_bf16: bool, lower: str) -> Any:
    """Train the way every built-in method does; return the trained model.

    Args:
        trainer: A transformers (or TRL) trainer, ready to train.
        model: The model it trains (for ``frozen_bf16``).
        frozen_bf16: Hold frozen weights in bf16 while training (`frozen_weights_in_bf16`).
        lower: The options an out-of-memory error should suggest lowering.

    """
    quiet_trainer(trainer)
    use_all_cores()
    with explain_out_of_memory(lower), frozen_weights_in_bf16(model, frozen_bf16):
        trainer.train()
    return trained_model(trainer)
