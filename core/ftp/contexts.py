"""What ftp hands a component when it asks it to do its work."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class LoadContext:
    """Given to `DataLoader.load`.

    Attributes:
        dataset: The dataset's name in the pipeline file.
        base_dir: The pipeline file's folder; relative paths are resolved against it.
        seed: The pipeline's seed.

    """

    dataset: str
    base_dir: Path
    seed: int = 42

    def resolve(self, path: str | Path) -> Path:
        """Resolve ``path`` against the pipeline file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)


@dataclass
class TrainContext:
    """Given to `Method.train`.

    Attributes:
        stage: The stage's name.
        model: The model to train (already on its device).
        tokenizer: Its tokenizer.
        provider: The model provider, for adapters.
        train: Training records, in the shape of the stage's format.
        eval: Held-out records, or None.
        adapter: The stage's adapter settings (an ``AdapterSection``), or None for full finetuning.
        output_dir: Where the method may write checkpoints.
        seed: The pipeline's seed.
        callbacks: ``transformers.TrainerCallback`` objects the trainer must use.
        log: Call with a dict of metrics to record them in metrics.jsonl.

    """

    stage: str
    model: Any
    tokenizer: Any
    provider: Any
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]] | None
    adapter: Any
    output_dir: Path
    seed: int
    callbacks: list[Any] = field(default_factory=list)
    log: Callable[[dict[str, Any]], None] = lambda metrics: None


@dataclass
class EvalContext:
    """Given to `Evaluator.evaluate`.

    Attributes:
        stage: The stage just finished, or ``"base"`` before training.
        model: The model to judge.
        tokenizer: Its tokenizer.
        data: Records in the shape of the evaluator's dataset, or None.
        seed: The pipeline's seed.

    """

    stage: str
    model: Any
    tokenizer: Any
    data: list[dict[str, Any]] | None
    seed: int = 42
