"""What preview and inspect share: which datasets, which method tokenizes them, the tokenizer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ftp.components import Method, TokenizedExample
from ftp.config import Dataset, Pipeline, Stage
from ftp.errors import UserError
from ftp.suggest import did_you_mean


@dataclass
class Target:
    """A dataset and the stage whose method shows how it is tokenized (None: no stage fits)."""

    dataset: Dataset
    stage: Stage | None

    @property
    def name(self) -> str:
        """The dataset's name in the pipeline file."""
        return self.dataset.name

    @property
    def shape(self) -> str:
        """The shape its format produces."""
        return self.dataset.format.cls.produces

    def method(self) -> Method | None:
        """The stage's method, built from its options."""
        return self.stage.method.build() if self.stage else None

    def describe(self) -> str:
        """``data 'x' (alpaca → conversational), tokenized by stage 'sft' (sft)``."""
        fmt = self.dataset.section.format
        how = (f"tokenized as stage {self.stage.name!r} ({self.stage.method.entry.name}) does"
               if self.stage else "no stage trains on this shape; plain token counts")
        return f"data {self.name!r} ({fmt} → {self.shape}), {how}"


def targets(pipeline: Pipeline, name: str | None, everything: bool) -> list[Target]:
    """The datasets to look at, each with the stage that tokenizes it.

    The stage is the first that trains on the dataset; for a dataset no stage trains on (an
    evaluation set), the first stage whose method accepts its shape.

    Args:
        pipeline: The validated pipeline.
        name: One dataset (``--data``), or None.
        everything: Without ``name``: every dataset (True) or those that stages train on.

    Raises:
        UserError: for an unknown dataset name.

    """
    names = list(pipeline.datasets)
    if name is not None:
        if name not in pipeline.datasets:
            raise UserError(f"--data: no dataset named {name!r}{did_you_mean(name, names)}; "
                            f"datasets: {', '.join(names)}")
        chosen = [name]
    elif everything:
        chosen = names
    else:
        trained = {n for s in pipeline.stages for n in s.datasets}
        chosen = [n for n in names if n in trained]
    out = []
    for n in chosen:
        ds = pipeline.datasets[n]
        stage = next((s for s in pipeline.stages if n in s.datasets), None)
        if stage is None:
            shape = ds.format.cls.produces
            stage = next((s for s in pipeline.stages
                          if shape in s.method.cls.accepts), None)
        out.append(Target(ds, stage))
    return out


def load_tokenizer(pipeline: Pipeline) -> Any:
    """The pipeline's tokenizer, from its model provider, without loading the model."""
    return pipeline.model.build().load_tokenizer()


def tokenize_examples(target: Target, tokenizer: Any, records: Sequence[dict[str, Any]]
                      ) -> list[TokenizedExample] | None:
    """``records`` as the target's method tokenizes them, or None when it cannot say."""
    method = target.method()
    if method is None or not records:
        return None
    return method.tokenize_examples(tokenizer, records)


def record_text(value: Any) -> str:
    """Every string in a record, in order, joined by newlines (for hashing and counting)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        # Role names ("user", "assistant") are structure, not text.
        return "\n".join(record_text(v) for k, v in value.items()
                         if k != "role" and not isinstance(v, bool))
    if isinstance(value, list):
        return "\n".join(record_text(v) for v in value)
    return ""
