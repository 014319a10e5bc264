"""The ``[distributed]`` strategy as TrainingArguments options.

Users never write an accelerate config, nor a DeepSpeed JSON unless they want to.

Pure: a section in, a dict of keyword arguments out (tested on a table of cases).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftp.distributed.config import DeepSpeedOptions, DistributedSection, FsdpOptions

#: FSDP's auto-wrap policies, by ftp's names (accelerate's constants).
AUTO_WRAP = {"transformer": "TRANSFORMER_BASED_WRAP", "size": "SIZE_BASED_WRAP",
             "none": "NO_WRAP"}
#: DeepSpeed keys the Trainer fills from its own arguments, so the two never disagree.
AUTO = "auto"


def trainer_kwargs(section: DistributedSection | None, on_gpu: bool,
                   base_dir: Path | None = None) -> dict[str, Any]:
    """TrainingArguments options for ``section``'s strategy (empty without a section).

    Args:
        section: The pipeline's ``[distributed]`` table, or None.
        on_gpu: The model trains on GPUs (the DDP backend is nccl there, gloo on CPU).
        base_dir: The pipeline file's folder, for a DeepSpeed JSON path.

    """
    if section is None:
        return {}
    kwargs: dict[str, Any] = {
        "ddp_timeout": round(section.timeout_minutes * 60),
        "ddp_backend": section.ddp.backend or ("nccl" if on_gpu else "gloo"),
    }
    # transformers would search for unused parameters in every step unless told not to; the
    # built-in methods have none (frozen weights do not count).
    kwargs["ddp_find_unused_parameters"] = bool(section.ddp.find_unused_parameters)
    for name in ("bucket_cap_mb", "broadcast_buffers"):
        value = getattr(section.ddp, name)
        if value is not None:
            kwargs[f"ddp_{name}"] = value
    if section.strategy == "fsdp":
        kwargs["fsdp"] = True
        kwargs["fsdp_config"] = fsdp_config(section.fsdp or FsdpOptions.model_validate({}))
    elif section.strategy == "deepspeed":
        ds = section.deepspeed or DeepSpeedOptions.model_validate({})
        kwargs["deepspeed"] = deepspeed_config(ds, base_dir)
    return kwargs


def fsdp_config(opts: FsdpOptions) -> dict[str, Any]:
    """The ``fsdp_config`` of transformers (FSDP2) for ``opts``.

    The full state dict is gathered for saving, so rank 0 writes an ordinary model folder.
    """
    config: dict[str, Any] = {
        "version": 2,
        "reshard_after_forward": opts.sharding == "full",
        "cpu_offload": opts.cpu_offload,
        "auto_wrap_policy": AUTO_WRAP[opts.auto_wrap],
        "activation_checkpointing": opts.activation_checkpointing,
        "state_dict_type": "FULL_STATE_DICT",
    }
    if opts.auto_wrap == "size":
        config["min_num_params"] = opts.min_params
    return config


def deepspeed_config(opts: DeepSpeedOptions, base_dir: Path | None = None) -> dict[str, Any] | str:
    """A DeepSpeed config for ``opts``, or the path of the user's own JSON file.

    Batch size, accumulation, clipping and precision are ``"auto"``: the Trainer fills them
    from the stage's own options, so the two can never disagree.
    """
    if opts.config is not None:
        return str((base_dir or Path()) / opts.config)
    zero: dict[str, Any] = {"stage": opts.zero_stage}
    if opts.zero_stage > 0:
        zero.update(overlap_comm=True, contiguous_gradients=True)
    if opts.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if opts.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    if opts.zero_stage == 3:
        # Rank 0 saves an ordinary model folder: gather the sharded weights for it.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_batch_size": AUTO,
        "train_micro_batch_size_per_gpu": AUTO,
        "gradient_accumulation_steps": AUTO,
        "gradient_clipping": AUTO,
        "bf16": {"enabled": AUTO},
        "fp16": {"enabled": AUTO},
        "zero_optimization": zero,
    }
