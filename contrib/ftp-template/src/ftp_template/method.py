"""``template-normtune``: train only normalisation weights and biases (BitFit-style).

BitFit (Ben Zaken et al., 2021) showed that training only a model's bias terms adapts it
surprisingly well; on models without biases (Llama) the normalisation weights play that part.
A few thousand weights train, so it is fast, needs little memory and hardly forgets. Weights
the provider froze stay frozen. It is built on ``ftp.TrainerMethod``: the method only says how
to build its transformers ``Trainer``; ftp trains it as it trains ``sft`` (precision, threads,
callbacks of other plugins, progress display, the trained model handed back).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ftp import IGNORE_INDEX, Shape, TrainContext, TrainerMethod, TrainingOptions, UserError


class NormTune(TrainerMethod):
    """Train only normalisation weights and biases; everything else stays frozen."""

    name = "template-normtune"
    accepts = frozenset({Shape.PROMPT_COMPLETION, Shape.LANGUAGE_MODELING})
    task = "causal-lm"

    class Config(TrainingOptions):
        """ftp's training options, with defaults for training a few weights, and a length."""

        learning_rate: float = Field(1e-3, gt=0, description="Peak learning rate.")
        epochs: float = Field(1.0, gt=0, description="Passes over the training data.")
        batch_size: int = Field(4, ge=1, description="Rows per step.")
        max_length: int = Field(256, ge=8, description="Rows are cut to this many tokens.")
        logging_steps: int = Field(10, ge=1, description="Log the loss every N steps.")

    config: Config

    def trainer(self, ctx: TrainContext) -> Any:
        """Unfreeze norms and biases only, tokenize, and build a transformers Trainer."""
        from transformers import Trainer, set_seed

        cfg = self.config
        set_seed(ctx.seed)
        trainable = select_norms_and_biases(ctx.model)
        if trainable == 0:
            raise UserError("the model has no trainable normalisation weights or biases")
        ctx.log({"stage": ctx.stage, "event": "normtune", "trainable_weights": trainable})
        rows = [tokenize(ctx.tokenizer, r, cfg.max_length) for r in ctx.train]
        # self.arguments: ftp's options as TrainingArguments (precision, seed, output folder).
        return Trainer(model=ctx.model, args=self.arguments(ctx), train_dataset=rows,
                       data_collator=Padder(ctx.tokenizer.pad_token_id),
                       callbacks=ctx.callbacks)


def select_norms_and_biases(model: Any) -> int:
    """Leave trainable only the norm weights and biases that were trainable; return the count."""
    count = 0
    for name, weight in model.named_parameters():
        keep = weight.requires_grad and ("norm" in name.lower() or name.endswith(".bias"))
        weight.requires_grad_(keep)
        count += weight.numel() if keep else 0
    return count


def tokenize(tokenizer: Any, record: dict[str, Any], max_length: int) -> dict[str, list[int]]:
    """Token ids and labels; a completion row has loss on the completion and the EOS only."""
    if "prompt" in record:
        prompt = tokenizer(record["prompt"], add_special_tokens=False)["input_ids"]
        answer = tokenizer(record["completion"], add_special_tokens=False)["input_ids"]
        ids = prompt + answer + [tokenizer.eos_token_id]
        labels = [IGNORE_INDEX] * len(prompt) + answer + [tokenizer.eos_token_id]
    else:
        ids = tokenizer(record["text"], add_special_tokens=False)["input_ids"]
        ids = ids + [tokenizer.eos_token_id]
        labels = list(ids)
    return {"input_ids": ids[:max_length], "labels": labels[:max_length]}


class Padder:
    """Pads a batch on the right; padding carries no loss and no attention."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, Any]:
        """Stack ``rows`` into padded tensors."""
        import torch

        width = max(len(r["input_ids"]) for r in rows)

        def pad(seq: list[int], value: int) -> list[int]:
            return seq + [value] * (width - len(seq))

        return {
            "input_ids": torch.tensor([pad(r["input_ids"], self.pad_id) for r in rows]),
            "labels": torch.tensor([pad(r["labels"], IGNORE_INDEX) for r in rows]),
            "attention_mask": torch.tensor([pad([1] * len(r["input_ids"]), 0) for r in rows]),
        }
