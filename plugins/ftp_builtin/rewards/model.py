"""``reward_model``: score completions with a trained sequence-classification model.

A model trained by the ``reward`` method (one output, "reward") gives its score directly; a
classifier with several labels gives the probability of the label named by ``label``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from ftp import Reward, StrictConfig, UserError


class RewardModel(Reward):
    """The score a trained reward model (sequence classification) gives prompt + completion."""

    name = "reward_model"

    class Config(StrictConfig):
        """Which model, and which of its outputs."""

        path: str = Field(description="A folder with the reward model (e.g. a run's model/), "
                          "relative to the working directory.")
        label: str | None = Field(None, description="For a classifier with several labels: "
                                  "the label whose probability is the reward.")
        max_length: int = Field(1024, gt=0, description="prompt + completion is cut to this "
                                "many tokens, from its start (the end, where the score is "
                                "read, is kept).")
        batch_size: int = Field(8, gt=0, description="Completions scored per forward pass.")

    config: Config

    def __init__(self, config: StrictConfig | None = None) -> None:
        super().__init__(config)
        self._loaded: tuple[Any, Any, int | None] | None = None

    def _load(self) -> tuple[Any, Any, int | None]:
        if self._loaded is not None:
            return self._loaded
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(self.config.path).expanduser()
        if not (path / "config.json").is_file():
            raise UserError(f"reward 'reward_model': no model at {path} (no config.json); "
                            "point `path` at a trained reward model's folder")
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        index = None
        labels = dict(model.config.id2label or {})
        if model.config.num_labels > 1:
            names = {str(v): int(k) for k, v in labels.items()}
            if self.config.label is None or self.config.label not in names:
                raise UserError(f"reward 'reward_model': {path} is a classifier with labels "
                                f"{', '.join(names)}; set `label` to the one to reward")
            index = names[self.config.label]
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
        self._loaded = (model, tokenizer, index)
        return self._loaded

    def score(self, prompts: list[Any], completions: list[str],
              rows: list[dict[str, Any]]) -> list[float | None]:
        """Score each prompt + completion, rendered as the reward model was trained on it."""
        model, tokenizer, index = self._load()
        ids = [end_ids(tokenizer, render_pair(tokenizer, p, c), self.config.max_length)[0]
               for p, c in zip(prompts, completions, strict=True)]
        return list(score_ids(model, tokenizer.pad_token_id, ids, self.config.batch_size, index))


def render_pair(tokenizer: Any, prompt: Any, completion: str) -> str:
    """Render prompt + completion as one text, through the chat template when there is one.

    The ``reward`` method trains on conversations rendered the same way, so the model scores
    what it learned to score.
    """
    messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
    if getattr(tokenizer, "chat_template", None):
        convo = [*messages, {"role": "assistant", "content": completion}]
        return tokenizer.apply_chat_template(convo, tokenize=False)
    return "".join(str(m.get("content", "")) for m in messages) + completion


def end_ids(tokenizer: Any, text: str, max_length: int) -> tuple[list[int], bool]:
    """Token ids of a rendered conversation, cut from its start to ``max_length``.

    A reward model reads its score at the last token, so the end — the answer and its
    end-of-turn token — must survive; cutting at the end would score a half answer, and a pair
    whose shared prompt fills ``max_length`` would score both answers alike. Training (the
    ``reward`` method), the ``reward_accuracy`` evaluator and this reward all cut this way.

    Returns:
        The ids, and whether anything was cut.

    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[-max_length:], len(ids) > max_length


def conversation_ids(tokenizer: Any, messages: list[dict[str, Any]], max_length: int
                     ) -> tuple[list[int], bool]:
    """A whole conversation rendered by the chat template, then cut as `end_ids` cuts.

    The one rendering the ``reward`` method trains on and ``reward_accuracy`` scores.
    """
    return end_ids(tokenizer, tokenizer.apply_chat_template(messages, tokenize=False),
                   max_length)


def score_ids(model: Any, pad_id: int | None, rows: list[list[int]], batch_size: int,
              index: int | None = None) -> list[float]:
    """A sequence-classification model's score of each row of token ids, in batches.

    Args:
        model: The reward model (or classifier).
        pad_id: The id padding the batch on the right (the model's config must know it too).
        rows: Token ids, one list per sequence.
        batch_size: Sequences per forward pass.
        index: For a classifier of several labels, the label whose probability is the score;
            None for a one-output reward model (the raw output).

    """
    import torch

    was_training = model.training
    model.eval()
    if model.config.pad_token_id is None:
        model.config.pad_token_id = pad_id
    pad = pad_id if pad_id is not None else 0
    out: list[float] = []
    try:
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            width = max(len(r) for r in batch)
            ids = torch.tensor([r + [pad] * (width - len(r)) for r in batch])
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in batch])
            with torch.no_grad():
                logits = model(input_ids=ids.to(model.device),
                               attention_mask=mask.to(model.device)).logits.float()
            values = logits[:, 0] if index is None else logits.softmax(-1)[:, index]
            out.extend(float(v) for v in values)
    finally:
        model.train(was_training)
    return out
