"""What the built-in methods share: training arguments and a trainer that logs progress."""

from __future__ import annotations

import os
from typing import Any, Literal

from ftp import StrictConfig, TrainContext
from pydantic import Field


class TrainingOptions(StrictConfig):
    """Options every built-in trainer-based method accepts (TRL/transformers names in brackets)."""

    epochs: float = Field(3.0, gt=0, description="Passes over the data [num_train_epochs].")
    max_steps: int = Field(-1, description="Stop after this many steps; overrides epochs if > 0.")
    learning_rate: float = Field(2e-4, gt=0)
    batch_size: int = Field(8, gt=0, description="Per-device batch size.")
    gradient_accumulation: int = Field(1, gt=0)
    warmup: float = Field(0.0, ge=0, description="Warmup: a fraction of steps (< 1) or steps.")
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    optimizer: str = Field("adamw_torch", description="A transformers optimizer name.")
    logging_steps: int = Field(5, gt=0)
    save_strategy: Literal["no", "epoch", "steps"] = Field(
        "no", description="Write trainer checkpoints under stages/NAME/checkpoints."
    )
    save_steps: int = Field(500, gt=0)
    bf16: bool | None = Field(None, description="bfloat16 autocast; default: on where supported "
                              "by a GPU.")
    gradient_checkpointing: bool = False


def training_arguments(opts: TrainingOptions, ctx: TrainContext, config_cls: Any,
                       **extra: Any) -> Any:
    """Build TRL/transformers arguments from ftp's options."""
    import torch

    on_gpu = torch.cuda.is_available() and next(ctx.model.parameters()).is_cuda
    bf16 = opts.bf16 if opts.bf16 is not None else (on_gpu and torch.cuda.is_bf16_supported())
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
        gradient_checkpointing=opts.gradient_checkpointing,
        seed=ctx.seed,
        data_seed=ctx.seed,
        report_to="none",
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        remove_unused_columns=False,
        **extra,
    )


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
