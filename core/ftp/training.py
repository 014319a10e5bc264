"""Building training methods on transformers and TRL trainers: `TrainerMethod`.

A trainer-backed method is a short file: its ``Config`` (a `TrainingOptions` subclass), the
shapes it accepts, and `TrainerMethod.trainer`, which builds the trainer from
`TrainerMethod.arguments`. Training it — threads, precision, frozen weights held in bf16,
quiet output, an out-of-memory error that says what to lower, the trained model unwrapped —
is done once, here, the same way for every method. docs/writing-plugins.md walks through one.

Nothing here imports torch, transformers or TRL at import time.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field

from ftp.components import Method, StrictConfig
from ftp.contexts import TrainContext
from ftp.errors import RunError
from ftp.gated_mlp import lean_gated_mlps
from ftp.memory import release
from ftp.training_guard import bind_trainer, unbind_trainer


class TrainingOptions(StrictConfig):
    """Options every trainer-backed method accepts (TRL/transformers names in brackets)."""

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
    trim_memory_steps: int = Field(
        0, ge=0, description="On CPU: give freed heap memory back to the system every N "
        "optimizer steps (glibc malloc_trim, or jemalloc's purge); 0: only after training and "
        "evaluations."
    )


@dataclass(frozen=True)
class Precision:
    """The precision decisions for one stage, made in one place (`Precision.decide`).

    Attributes:
        on_gpu: The model is on a CUDA device.
        bf16: Train under bf16 autocast.
        frozen_bf16: Hold the frozen (non-adapter) weights in bf16 while training.

    """

    on_gpu: bool
    bf16: bool
    frozen_bf16: bool

    @classmethod
    def decide(cls, opts: TrainingOptions, ctx: TrainContext) -> Precision:
        """Decide for ``opts`` and the model in ``ctx``.

        bf16 as asked, else where the hardware computes it natively; frozen weights in bf16
        only under bf16 with an adapter (without one, every weight trains).
        """
        import torch

        on_gpu = torch.cuda.is_available() and next(ctx.model.parameters()).is_cuda
        bf16 = opts.bf16 if opts.bf16 is not None else native_bf16(on_gpu)
        return cls(on_gpu, bf16, opts.frozen_bf16 and bf16 and ctx.adapter is not None)


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


class TrainerMethod(Method):
    """Base of a method that trains with a transformers ``Trainer`` or a TRL trainer.

    Subclasses give a ``Config`` (subclass `TrainingOptions`), ``accepts`` and implement
    `trainer`; `train` is done here. Class attributes:

    - ``out_of_memory_hint``: the options an out-of-memory error tells the user to lower;
    - ``build_while_training``: build the trainer inside the training set-up (frozen weights
      already in bf16), for trainers that compute with the model as they are built or before
      the first step (a precomputed reference); by default it is built before.

    `while_training` and `prepared` are optional steps around the build.
    """

    class Config(TrainingOptions):
        """ftp's training options (subclass `TrainingOptions` for a method's own)."""

    config: TrainingOptions
    out_of_memory_hint: ClassVar[str] = "batch_size"
    build_while_training: ClassVar[bool] = False

    def trainer(self, ctx: TrainContext) -> Any:
        """Return the trainer, ready to train ``ctx.model`` on ``ctx.train``.

        Build its arguments with `arguments`, and pass ``ctx.callbacks`` to it.
        """
        raise NotImplementedError

    def arguments(self, ctx: TrainContext, config_cls: Any = None, **extra: Any) -> Any:
        """The trainer's arguments, built from ``self.config`` and ``extra`` options.

        Args:
            ctx: The stage's context (output folder, seed, the model's device).
            config_cls: The arguments class: a TRL config such as ``trl.SFTConfig``;
                default transformers' ``TrainingArguments``.
            **extra: Options of ``config_cls`` that ftp's options do not set.

        """
        if config_cls is None:
            from transformers import TrainingArguments

            config_cls = TrainingArguments
        return training_arguments(self.config, ctx, config_cls, **extra)

    def while_training(self, ctx: TrainContext) -> contextlib.AbstractContextManager[Any]:
        """A context held while the trainer is built (if `build_while_training`) and trains."""
        return contextlib.nullcontext()

    def prepared(self, ctx: TrainContext, trainer: Any) -> None:
        """Called with the built trainer before it trains: check or log what it prepared."""

    def train(self, ctx: TrainContext) -> Any:
        """Build the trainer, train, and return the trained model (adapter still attached)."""
        precision = Precision.decide(self.config, ctx)
        use_all_cores()
        trainer = None if self.build_while_training else self.trainer(ctx)
        try:
            with (explain_out_of_memory(self.out_of_memory_hint),
                  frozen_weights_in_bf16(ctx.model, precision.frozen_bf16),
                  lean_gated_mlps(ctx.model) as lean_mlps,
                  self.while_training(ctx)):
                if lean_mlps:
                    ctx.log({"stage": ctx.stage, "event": "lean_mlps", "modules": lean_mlps})
                if trainer is None:
                    trainer = self.trainer(ctx)
                self.prepared(ctx, trainer)
                quiet_trainer(trainer)
                if self.config.trim_memory_steps and not precision.on_gpu:
                    trainer.add_callback(trim_memory_callback(self.config.trim_memory_steps))
                bind_trainer(trainer)
                # From ftp's checkpoint when resuming (None: from the start).
                resume = str(ctx.resume_from) if ctx.resume_from else None
                trainer.train(resume_from_checkpoint=resume)
                model = trained_model(trainer)
                # The guard (held by the runner until the stage ends) points back at the
                # trainer: unbound, the trainer with its optimizer state, data loaders and
                # batches is freed here, before the full-precision frozen weights come back
                # and before the model is saved and evaluated.
                unbind_trainer(trainer)
                trainer = None
        finally:
            if trainer is not None:  # training failed: the trainer is no use either
                unbind_trainer(trainer)
                trainer = None
            release(precision.on_gpu)
        return model


def training_arguments(opts: TrainingOptions, ctx: TrainContext, config_cls: Any,
                       **extra: Any) -> Any:
    """Build TRL/transformers arguments of class ``config_cls`` from ftp's options."""
    from ftp.distributed.translate import trainer_kwargs

    precision = Precision.decide(opts, ctx)
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
        bf16=precision.bf16,
        # TRL refuses bf16 on CPU unless told it is on CPU on purpose.
        use_cpu=not precision.on_gpu,
        activation_checkpointing=opts.gradient_checkpointing,
        seed=ctx.seed,
        data_seed=ctx.seed,
        report_to="none",
        disable_tqdm=True,
        # Padding-free rows have no padding, and pad == EOS in many tokenizers, so
        # "non_padding" would not count the EOS tokens that are trained on.
        include_num_input_tokens_seen="all" if getattr(opts, "padding_free", False)
        else "non_padding",
        dataloader_num_workers=0,
        remove_unused_columns=False,
        # transformers would hide a NaN step's loss in its running mean; ftp's guard stops or
        # skips such steps itself, and the logged loss must show what happened.
        logging_nan_inf_filter=False,
        # DDP/FSDP/DeepSpeed options of [distributed] (none in one process).
        **trainer_kwargs(ctx.distributed, precision.on_gpu),
        **extra,
    )


def trim_memory_callback(every: int) -> Any:
    """A ``TrainerCallback`` that gives freed heap memory back every ``every`` steps (CPU).

    Off by default: on the quickstart the figures with and without it were within the noise
    of one run, for speed and for peak memory alike.
    """
    from transformers import TrainerCallback

    from ftp.memory import trim

    class TrimMemory(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step % every == 0:
                trim()

    return TrimMemory()


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
    """Use every core on CPU unless ``OMP_NUM_THREADS`` says otherwise.

    Under a launcher the cores are shared out among this machine's processes.

    Launchers (accelerate) may leave one thread per process, which halves the speed.
    """
    import torch

    from ftp.distributed.ranks import threads_per_process

    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(threads_per_process())


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
    from safetensors import safe_open
    from safetensors.torch import save_file

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
            # One tensor at a time: each bf16 copy is freed as its original comes back, so the
            # full-precision originals are never held twice.
            device = str(next(iter(frozen.values())).device)
            with safe_open(spill, framework="pt", device=device) as originals:
                for name, p in frozen.items():
                    p.data = originals.get_tensor(name)


@contextlib.contextmanager
def explain_out_of_memory(lower: str) -> Iterator[None]:
    """Turn an out-of-memory error into a `RunError` saying what to ``lower``."""
    try:
        yield
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            raise RunError(f"out of memory: lower {lower}, or use an adapter") from exc
        raise
