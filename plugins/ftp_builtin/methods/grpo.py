"""``grpo``: group relative policy optimisation on TRL's GRPOTrainer, with rewards as plugins.

The model writes ``num_generations`` completions per prompt; each is scored by the stage's
``rewards`` (components of kind ``reward``, from any plugin), summed with their weights; a
completion's advantage is its reward relative to the others of its group. The prompts come
from the prompt-only shape, whose rows keep their other fields for the rewards.

Generation is transformers' own ``generate`` on CPU, and vLLM on a GPU where it is installed
(``generation = "auto"``); the run output says which.

The reference model for the KL term (``beta > 0``) is the model the stage starts from: with an
adapter, the base with the adapter disabled (TRL's own way); without one, a frozen copy of the
model in memory. TRL would reload the weights named in the model's config instead, which
after an earlier stage are not the weights this stage starts from.

Every scored completion is written to ``completions.jsonl`` in the stage's folder, with its
prompt, the optimizer step it trained and each reward's value: what the model actually wrote
is the first thing to read when a reward does not rise.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ftp import (
    RewardRef,
    RunError,
    Shape,
    TrainContext,
    TrainerMethod,
    TrainingOptions,
    UserError,
    hookimpl,
)
from ftp.components import unique_labels

GRPOLoss = Literal["dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo"]
COMPLETIONS_FILE = "completions.jsonl"


class GRPO(TrainerMethod):
    """Group relative policy optimisation: learn from rewarded completions (TRL GRPOTrainer)."""

    name = "grpo"
    accepts = frozenset({Shape.PROMPT_ONLY})
    task = "causal-lm"
    out_of_memory_hint = "batch_size, num_generations or max_completion_length"

    class Config(TrainingOptions):
        """GRPO options: the training options, the rewards, and how completions are drawn."""

        rewards: list[RewardRef] = Field(
            min_length=1, description="The rewards, e.g. [{ reward = 'regex', weight = 1.0, "
            "pattern = '...' }]; each table's other keys are the reward's options."
        )
        learning_rate: float = Field(
            1e-6, gt=0, description="RL moves far with little: 1e-6 suits full finetuning; with "
            "a LoRA adapter use more, e.g. 1e-5 to 1e-4."
        )
        num_generations: int = Field(4, ge=2, description="Completions drawn per prompt (the "
                                     "group whose rewards are compared).")
        max_completion_length: int = Field(128, gt=0, description="Longest completion, in "
                                           "tokens; longer ones are cut (and counted clipped).")
        max_prompt_length: int | None = Field(None, gt=0, description="Longer prompts are cut "
                                              "from the left; default: no limit.")
        temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
        top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling threshold.")
        beta: float = Field(0.0, ge=0, description="Weight of the KL penalty to the starting "
                            "model; 0 (TRL's default) needs no reference model and logs no KL.")
        loss_type: GRPOLoss = Field("dapo", description="How token losses are aggregated "
                                    "(TRL's names; 'grpo' is the original, length-biased one).")
        scale_rewards: Literal["group", "batch", "none"] = Field(
            "group", description="Divide advantages by the reward's std in the group, the "
            "batch, or not at all (Dr. GRPO)."
        )
        mask_truncated_completions: bool = Field(
            False, description="Leave completions cut at max_completion_length out of the loss."
        )
        frozen_bf16: bool = Field(
            False, description="Hold the frozen base weights in bf16 while training (with an "
            "adapter and bf16); off by default: generation runs outside the trainer's autocast, "
            "where bf16 base weights would meet the adapter's fp32 ones."
        )
        generation: Literal["auto", "transformers", "vllm"] = Field(
            "auto", description="Who generates: 'auto' is vLLM on a GPU where it is installed, "
            "else transformers."
        )

        _distinct = field_validator("rewards")(unique_labels)

        @model_validator(mode="after")
        def _groups_fit_the_batch(self) -> GRPO.Config:
            per_step = self.batch_size * self.gradient_accumulation
            if per_step % self.num_generations:
                raise ValueError(
                    f"batch_size × gradient_accumulation ({per_step}) must be a multiple of "
                    f"num_generations ({self.num_generations}): each step trains whole groups")
            return self

    config: Config

    def trainer(self, ctx: TrainContext) -> Any:
        """The GRPOTrainer, with the stage's rewards as its reward functions."""
        from datasets import Dataset
        from transformers import set_seed
        from trl import GRPOConfig

        cfg = self.config
        set_seed(ctx.seed)
        if not ctx.train:
            raise UserError("no training prompts")
        use_vllm = _use_vllm(cfg.generation, ctx.model)
        print(f"  grpo: generating with {'vLLM' if use_vllm else 'transformers'}", flush=True)
        fields = sorted({k for row in ctx.train for k in row} - {"prompt"})
        # Next to checkpoints/, in the stage's own folder.
        log_path = Path(ctx.output_dir).parent / COMPLETIONS_FILE
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("", encoding="utf-8")
        funcs = [RewardFunction(ref, fields, log_path) for ref in cfg.rewards]
        args = self.arguments(
            ctx, GRPOConfig,
            num_generations=cfg.num_generations,
            max_completion_length=cfg.max_completion_length,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            beta=cfg.beta,
            loss_type=cfg.loss_type,
            scale_rewards=cfg.scale_rewards,
            mask_truncated_completions=cfg.mask_truncated_completions,
            reward_weights=[ref.weight for ref in cfg.rewards],
            use_vllm=use_vllm,
            vllm_mode="colocate",
            eval_strategy="no",
        )
        if cfg.max_prompt_length is not None:
            ctx.train = [_cut_prompt(row, ctx.tokenizer, cfg.max_prompt_length)
                         for row in ctx.train]
        return _build_trainer(ctx, cfg.beta, funcs, args, Dataset.from_list(ctx.train))


def _build_trainer(ctx: TrainContext, beta: float, funcs: list[Any], args: Any,
                   dataset: Any) -> Any:
    """The GRPOTrainer, its reference (if any) a copy of the model this stage starts from."""
    from trl import GRPOTrainer

    with _reference_is_a_copy(ctx.model, needed=beta > 0):
        return GRPOTrainer(model=ctx.model, reward_funcs=funcs, args=args,
                           train_dataset=dataset, processing_class=ctx.tokenizer,
                           callbacks=ctx.callbacks)


@contextlib.contextmanager
def _reference_is_a_copy(model: Any, needed: bool) -> Iterator[None]:
    """While GRPOTrainer is built, make its reference model a frozen copy of ``model``.

    TRL builds the reference of a non-adapter model from the path in its config; a model
    built in memory has none, and after an earlier stage that path holds other weights.
    """
    import trl.trainer.grpo_trainer as grpo_module

    original = grpo_module.create_model_from_path
    if needed:
        def copy_of_model(*args: Any, **kwargs: Any) -> Any:
            ref = copy.deepcopy(model).eval()
            ref.requires_grad_(False)
            return ref

        grpo_module.create_model_from_path = copy_of_model
    try:
        yield
    finally:
        grpo_module.create_model_from_path = original


def _use_vllm(choice: str, model: Any) -> bool:
    """Whether vLLM generates: asked for, or 'auto' on a GPU with vLLM installed."""
    import torch
    from trl.import_utils import is_vllm_available

    on_gpu = torch.cuda.is_available() and next(model.parameters()).is_cuda
    if choice == "vllm":
        if not (on_gpu and is_vllm_available()):
            raise UserError("generation = 'vllm' needs a GPU and the vllm package; use "
                            "'auto' or 'transformers'")
        return True
    return choice == "auto" and on_gpu and is_vllm_available()


def _cut_prompt(row: dict[str, Any], tokenizer: Any, limit: int) -> dict[str, Any]:
    """A plain-text prompt cut to its last ``limit`` tokens (chat prompts are left as they are)."""
    prompt = row["prompt"]
    if not isinstance(prompt, str):
        return row
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if len(ids) <= limit:
        return row
    return {**row, "prompt": tokenizer.decode(ids[-limit:])}


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a string, or a conversational list of messages."""
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content") or "") for m in completion)


class RewardFunction:
    """A reward component as TRL calls a reward function; logs what it scored.

    Args:
        ref: The stage's entry for the reward (validated and bound).
        fields: The names of the rows' fields besides the prompt.
        log_path: The ``completions.jsonl`` to append to.

    """

    def __init__(self, ref: RewardRef, fields: list[str], log_path: Path) -> None:
        self.ref = ref
        self.reward = ref.build()
        self.fields = fields
        self.log_path = log_path
        # TRL names the metric rewards/NAME/mean after the function's __name__.
        self.__name__ = ref.label

    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any
                 ) -> list[float | None]:
        """Score a generation batch, as TRL calls it (the rows' fields arrive as kwargs)."""
        texts = [completion_text(c) for c in completions]
        rows = [{f: kwargs[f][i] for f in self.fields if f in kwargs}
                for i in range(len(texts))]
        try:
            values = list(self.reward.score(prompts, texts, rows))
        except UserError as exc:
            raise UserError(f"reward {self.ref.reward!r} (plugin {self.ref.plugin!r}): "
                            f"{exc}") from exc
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            raise RunError(f"reward {self.ref.reward!r} (plugin {self.ref.plugin!r}) failed: "
                           f"{type(exc).__name__}: {first}") from exc
        if len(values) != len(texts):
            raise RunError(f"reward {self.ref.reward!r} (plugin {self.ref.plugin!r}) returned "
                           f"{len(values)} scores for {len(texts)} completions")
        state = kwargs.get("trainer_state")
        step = (state.global_step + 1) if state is not None else None
        with self.log_path.open("a", encoding="utf-8") as out:
            for prompt, text, row, value in zip(prompts, texts, rows, values, strict=True):
                out.write(json.dumps({"step": step, "reward": self.ref.label, "value": value,
                                      "prompt": prompt, "completion": text, "row": row},
                                     default=str) + "\n")
        return values


@hookimpl
def ftp_methods() -> list[type]:
    """Register ``grpo``."""
    return [GRPO]
