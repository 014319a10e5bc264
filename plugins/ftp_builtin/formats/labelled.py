"""Built-in format ``classification``: a text column and a label column, for classifiers.

Records become ``{"text": str, "label": str | int}``. A label's *name* is its text: ``"positive"``
stays ``"positive"``, the integer ``1`` is named ``"1"``. The classifier's label ids are given
to those names in a fixed order (`label_order`), so a run's label set and order never depend
on the order of the rows.

With ``labels`` set, the label set and its order are the user's: every record also carries
``"label_names"`` (that list, as names), which the ``classify`` method uses for the model's
``id2label`` even when a label never occurs in the training rows; a row with any other
label is refused.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator

from ftp import Format, Shape, StrictConfig, hookimpl

#: Key of the optional fixed label list in a record (see the module docstring).
LABEL_NAMES = "label_names"

_INTEGER = re.compile(r"-?\d+")


def label_name(label: Any) -> str:
    """The name of a label: its text (an integer's decimal digits)."""
    return label if isinstance(label, str) else str(label)


def label_order(names: set[str] | list[str]) -> list[str]:
    """Label names in id order: integers numerically first ("2" before "10"), then text."""
    def key(name: str) -> tuple[int, int, str]:
        return (0, int(name), "") if _INTEGER.fullmatch(name) else (1, 0, name)

    return sorted(set(names), key=key)


class Classification(Format):
    """Labelled text for classifiers: a text column and a label column (text or integer)."""

    name = "classification"
    produces = Shape.LABELLED_TEXT

    class Config(StrictConfig):
        """Column names and an optional fixed label set."""

        text: str = Field("text", description="Column with the text to classify.")
        label: str = Field("label", description="Column with the label (text or integer).")
        labels: list[str | int] | None = Field(
            None, description="The label set, in id order; a row with another label is an "
            "error. Default: the labels found in the training rows, sorted (numbers "
            "numerically).",
        )

        @field_validator("labels")
        @classmethod
        def _distinct(cls, labels: list[str | int] | None) -> list[str | int] | None:
            if labels is None:
                return None
            names = [label_name(x).strip() for x in labels]
            if len(names) < 2:
                raise ValueError("a classifier needs at least 2 labels")
            if any(not n for n in names):
                raise ValueError("labels may not be empty")
            doubled = sorted({n for n in names if names.count(n) > 1})
            if doubled:
                raise ValueError(f"labels listed more than once: {', '.join(doubled)}")
            return labels

    config: Config

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        fixed = self.config.labels
        # Fixed labels are matched by name, so that a CSV's "1" is the listed integer 1.
        self._fixed = ({label_name(x).strip(): x for x in fixed} if fixed is not None else None)
        self._names = [label_name(x).strip() for x in fixed] if fixed is not None else None

    def convert(self, record: dict[str, Any]) -> dict[str, Any]:
        """Keep the text and the label, stripped; check the label against ``labels``."""
        c = self.config
        text = record.get(c.text)
        if text is None:
            raise ValueError(f"missing field {c.text!r}; the row has {sorted(record)}")
        if not isinstance(text, str):
            raise ValueError(f"field {c.text!r} should be text, got {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"empty text in {c.text!r}")
        label = self._label(record)
        out: dict[str, Any] = {"text": text.strip(), "label": label}
        if self._names is not None:
            out[LABEL_NAMES] = list(self._names)
        return out

    def _label(self, record: dict[str, Any]) -> str | int:
        column = self.config.label
        label = record.get(column)
        if label is None:
            raise ValueError(f"missing field {column!r}; the row has {sorted(record)}")
        # bool is an int to Python, but true/false are not class ids a user means.
        if isinstance(label, bool) or not isinstance(label, str | int):
            raise ValueError(f"label {column!r} should be text or an integer, got "
                             f"{type(label).__name__} {label!r}")
        if isinstance(label, str):
            label = label.strip()
            if not label:
                raise ValueError(f"empty label in {column!r}")
        if self._fixed is None:
            return label
        name = label_name(label)
        if name not in self._fixed:
            raise ValueError(f"label {name!r} is not one of the labels: "
                             f"{', '.join(map(repr, self._names or []))}")
        return self._fixed[name]


@hookimpl
def ftp_formats() -> list[type]:
    """Register ``classification``."""
    return [Classification]
