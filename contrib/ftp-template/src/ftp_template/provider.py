"""``template-hf``: ftp's ``hf`` provider, with the embeddings and lowest blocks frozen.

Freezing the bottom of a network and training the top is a cheap middle way between LoRA
and full finetuning: fewer gradients and optimizer state, and the general features of the
lower layers stay as they were. It subclasses the built-in provider, which is a plugin like
any other: everything else (catalog names, GGUF, adapters, saving) works as in ``hf``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from ftp import UserError
from ftp_builtin.models import HFProvider


class PartlyFrozenHF(HFProvider):
    """Hugging Face models with the embeddings and the lowest N transformer blocks frozen."""

    name = "template-hf"

    class Config(HFProvider.Config):
        """The ``hf`` options, plus how much to freeze."""

        freeze_layers: int = Field(
            1, ge=0, description="Freeze this many transformer blocks, from the bottom."
        )
        freeze_embeddings: bool = Field(True, description="Freeze the input embeddings too.")

    config: Config

    def load_model(self, task: str, init_from: Path | None = None, **options: Any) -> Any:
        """Load as ``hf`` does, then switch off gradients for the frozen part."""
        model = super().load_model(task, init_from=init_from, **options)
        freeze(model, self.config.freeze_layers, self.config.freeze_embeddings)
        return model


def freeze(model: Any, layers: int, embeddings: bool) -> int:
    """Freeze ``model``'s embeddings and lowest ``layers`` blocks; return how many weights."""
    blocks = model.get_decoder().layers if hasattr(model, "get_decoder") else None
    if blocks is None:
        raise UserError(f"{type(model).__name__}: cannot find its transformer blocks")
    if layers > len(blocks):
        raise UserError(f"freeze_layers = {layers}, but the model has {len(blocks)} blocks")
    parts = list(blocks[:layers])
    if embeddings:
        parts.append(model.get_input_embeddings())
    frozen = 0
    for part in parts:
        for weight in part.parameters():
            weight.requires_grad_(False)
            frozen += weight.numel()
    return frozen
