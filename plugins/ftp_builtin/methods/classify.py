"""``classify``: supervised sequence classification on transformers' Trainer.

The model is loaded with a classification head sized and named for the training labels
(`Classify.model_options`), so ``id2label``/``label2id`` are in the model's config from the
start and are saved with it. Texts are tokenized once (truncated to ``max_length``) and padded
per batch; the loss is the model's own cross-entropy over the labels. Encoders (BERT, MiniLM)
classify from their pooled first token, decoders (Llama, SmolLM2) from the last non-padding
token, which needs ``pad_token_id`` in the model's config (`ensure_pad_token`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from ftp import Shape, TrainContext, TrainerMethod, TrainingOptions, UserError, hookimpl
from ftp.components import IGNORE_INDEX, TokenizedExample, TokenSequence
from ftp_builtin.formats.labelled import LABEL_NAMES, label_name, label_order
from ftp_builtin.methods.tokenized import cached_rows, plugin_identity


def labels_of(records: Sequence[dict[str, Any]]) -> list[str]:
    """The label names of a dataset in id order: a format's fixed list, else those found."""
    fixed = next((r[LABEL_NAMES] for r in records if r.get(LABEL_NAMES)), None)
    if fixed is not None:
        return [label_name(x) for x in fixed]
    return label_order({label_name(r["label"]) for r in records})


def ensure_pad_token(model: Any, tokenizer: Any) -> None:
    """Make the model's ``pad_token_id`` the one the tokenizer pads batches with.

    Decoder classifiers score the last token that is not ``pad_token_id``: without one they
    refuse batches of more than one row, and with another id than the tokenizer's they would
    score a padding token. Encoders only use it to initialise embeddings, so this is harmless
    for them.
    """
    pad = tokenizer.pad_token_id
    if pad is not None and getattr(model.config, "pad_token_id", None) != pad:
        model.config.pad_token_id = pad


def classifier_heads(model: Any, num_labels: int) -> dict[str, bool]:
    """Linear layers that output one score per label, each with whether it is being trained."""
    import torch

    heads: dict[str, bool] = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module.out_features == num_labels:
            heads[name] = any(p.requires_grad for p in module.parameters())
    return heads


class Classify(TrainerMethod):
    """Text classification (sentiment, intent, topic) on labelled text (transformers Trainer)."""

    name = "classify"
    accepts = frozenset({Shape.LABELLED_TEXT})
    task = "sequence-classification"
    out_of_memory_hint = "batch_size or max_length"

    class Config(TrainingOptions):
        """Classification options: the shared training options, with defaults for a classifier."""

        learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate.")
        batch_size: int = Field(16, gt=0, description="Per-device batch size.")
        warmup: float = Field(0.1, ge=0, description="Warmup: a fraction of steps (< 1) or steps.")
        weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
        max_length: int = Field(256, gt=0, description="Longer texts are truncated (tokens).")
        # One fused kernel for every parameter: on a CPU the per-tensor AdamW step costs as
        # much as MiniLM's forward and backward pass together (measured: ~5x slower).
        optimizer: str = Field("adamw_torch_fused", description="A transformers optimizer name.")
        group_by_length: bool = Field(
            True, description="Batch texts of similar length together (less padding, faster); "
            "which batch comes when is still random."
        )

    config: Config

    @classmethod
    def starts_from(cls) -> frozenset[str]:
        """A classifier can start from a language model (e.g. after ``sft`` or ``cpt``)."""
        return frozenset({"causal-lm", "sequence-classification"})

    def model_options(self, train: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """A head with one output per label, and the label names in the model's config."""
        names = labels_of(train)
        if len(names) < 2:
            raise UserError(f"a classifier needs at least 2 labels; the training data has only "
                            f"{', '.join(map(repr, names)) or 'none'} (list them all with the "
                            "format's `labels` option)")
        return {
            "num_labels": len(names),
            "id2label": dict(enumerate(names)),
            "label2id": {name: i for i, name in enumerate(names)},
            # With one label transformers would silently train a regression.
            "problem_type": "single_label_classification",
        }

    def trainer(self, ctx: TrainContext) -> Any:
        """Check labels against the model's, tokenize, and build a transformers Trainer."""
        from transformers import DataCollatorWithPadding, Trainer, set_seed

        cfg = self.config
        set_seed(ctx.seed)
        model = ctx.model
        ensure_pad_token(model, ctx.tokenizer)
        label2id = _label2id(model)
        unknown = label_order({label_name(r["label"]) for r in ctx.train} - set(label2id))
        if unknown:
            raise UserError(
                f"training labels {', '.join(map(repr, unknown))} are not among the model's "
                f"labels {', '.join(map(repr, label2id))}; the model is loaded with the labels "
                "of its first training data (Method.model_options)")
        if ctx.adapter is not None:
            heads = classifier_heads(model, len(label2id))
            if heads and not any(heads.values()):
                raise UserError(
                    f"the classification head ({', '.join(heads)}) is frozen under the adapter, "
                    "so it would keep its random weights; add its name to adapter."
                    "modules_to_save")

        options = {"method": self.name, "max_length": cfg.max_length, "label2id": label2id}
        rows, sizes, cached = cached_rows(
            ctx, "train", ctx.train, options, plugin_identity(sys.modules[__name__]),
            lambda: _tokenize_counted(ctx.tokenizer, ctx.train, cfg.max_length, label2id))
        truncated, tokens = sizes["truncated"], sizes["tokens"]
        label_counts = {name: 0 for name in label2id}
        for r in ctx.train:
            label_counts[label_name(r["label"])] += 1
        ctx.log({"stage": ctx.stage, "event": "tokenized", "examples": len(rows),
                 "tokens": tokens, "truncated": truncated, "label_counts": label_counts,
                 "cached": cached})

        # Short texts of mixed length: random batches of SST-2 phrases are ~40% padding.
        sampling = "group_by_length" if cfg.group_by_length else "random"
        return Trainer(
            model=model,
            args=self.arguments(ctx, eval_strategy="no", train_sampling_strategy=sampling),
            # Arrow columns over the cache entry's mapped files: no Python int per token.
            train_dataset=rows.dataset(),
            processing_class=ctx.tokenizer,
            data_collator=DataCollatorWithPadding(ctx.tokenizer),
            callbacks=ctx.callbacks,
        )

    def tokenize_examples(self, tokenizer: Any, records: Sequence[dict[str, Any]]
                          ) -> list[TokenizedExample]:
        """Each text as `train` tokenizes it, cut at ``max_length``; the loss is on its label."""
        texts = [r["text"] for r in records]
        whole = tokenizer(texts)["input_ids"] if texts else []
        out = []
        for ids, record in zip(whole, records, strict=True):
            cut = tokenizer(record["text"], truncation=True,
                            max_length=self.config.max_length)["input_ids"]
            out.append(TokenizedExample(
                [TokenSequence(list(cut), [IGNORE_INDEX] * len(cut))], length=len(ids),
                truncated=len(ids) > self.config.max_length, label=label_name(record["label"])))
        return out


def _label2id(model: Any) -> dict[str, int]:
    config = model.config
    id2label = getattr(config, "id2label", None) or {}
    return {str(name): int(i) for i, name in id2label.items()}


def _tokenize(tokenizer: Any, records: Sequence[dict[str, Any]], max_length: int,
              label2id: dict[str, int]) -> tuple[list[dict[str, Any]], int, int]:
    """Token ids per record (no padding: the collator pads each batch), with its label id."""
    texts = [r["text"] for r in records]
    # One token of slack tells a truncated text from one that fits exactly.
    longer = tokenizer(texts, truncation=True, max_length=max_length + 1)["input_ids"]
    enc = tokenizer(texts, truncation=True, max_length=max_length)
    rows = []
    for i, r in enumerate(records):
        row = {key: enc[key][i] for key in enc}
        row["labels"] = label2id[label_name(r["label"])]
        rows.append(row)
    truncated = sum(len(ids) > max_length for ids in longer)
    tokens = sum(len(ids) for ids in enc["input_ids"])
    return rows, truncated, tokens


def _tokenize_counted(tokenizer: Any, records: Sequence[dict[str, Any]], max_length: int,
                      label2id: dict[str, int]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """`_tokenize` with its counts as a dict (the cache stores them as JSON)."""
    rows, truncated, tokens = _tokenize(tokenizer, records, max_length, label2id)
    return rows, {"truncated": truncated, "tokens": tokens}


@hookimpl
def ftp_methods() -> list[type]:
    """Register ``classify``."""
    return [Classify]
