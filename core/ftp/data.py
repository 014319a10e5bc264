"""Preparing a dataset: load, fill placeholders, format, split — the same for every plugin."""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftp.components import DataLoader, Format
from ftp.config import Dataset
from ftp.contexts import LoadContext
from ftp.errors import UserError

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


@dataclass
class Prepared:
    """A dataset ready for methods and evaluators.

    Attributes:
        name: The dataset's name (or, for a stage's mixture, a label such as ``a+b``).
        shape: The record shape its format produces.
        train: Training records.
        eval: Held-out records.
        fingerprint: What ``data.json`` records about it.
        warnings: Lines to show on the terminal.
        skipped: With ``on_bad_rows = "skip"``: how many rows were skipped, by reason.

    """

    name: str
    shape: str
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    fingerprint: dict[str, Any]
    warnings: list[str]
    skipped: dict[str, int] = field(default_factory=dict)

    def split(self, which: str) -> list[dict[str, Any]]:
        """``eval``, ``train`` or ``all`` records."""
        if which == "eval":
            return self.eval
        if which == "train":
            return self.train
        return self.train + self.eval


def fill_placeholders(value: Any, values: dict[str, str], where: str) -> Any:
    """Replace ``{{key}}`` in every string of a record; an unknown key is a `UserError`."""
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            key = m.group(1)
            if key not in values:
                raise UserError(
                    f"{where}: placeholder {{{{{key}}}}} has no value; add {key} = \"...\" to "
                    "placeholders (defined: " + (", ".join(sorted(values)) or "none") + ")"
                )
            return values[key]

        return _PLACEHOLDER.sub(sub, value)
    if isinstance(value, list):
        return [fill_placeholders(v, values, where) for v in value]
    if isinstance(value, dict):
        return {k: fill_placeholders(v, values, where) for k, v in value.items()}
    return value


def _digest(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_records(ds: Dataset, base_dir: Path, seed: int) -> list[dict[str, Any]]:
    """Run the dataset's loader.

    Raises:
        UserError: for a missing file, bad rows, or no rows at all.

    """
    loader: DataLoader = ds.loader.build()  # type: ignore[assignment]
    records = loader.load(LoadContext(dataset=ds.name, base_dir=base_dir, seed=seed))
    if not records:
        raise UserError(f"data.{ds.name}: the loader returned no rows")
    return records


def prepare(ds: Dataset, records: list[dict[str, Any]], base_dir: Path, seed: int) -> Prepared:
    """Fill placeholders, format and split one dataset's records.

    Raises:
        UserError: naming the dataset and row for bad data.

    """
    where = f"data.{ds.name}"
    ctx = LoadContext(dataset=ds.name, base_dir=base_dir, seed=seed)
    if ds.section.limit is not None:
        records = records[: ds.section.limit]
    fmt: Format = ds.format.build()  # type: ignore[assignment]
    formatted = []
    unfilled = 0
    for i, record in enumerate(records):
        row_where = f"{where} row {i}"
        if ds.section.placeholders:
            record = fill_placeholders(record, ds.section.placeholders, row_where)
        elif _has_placeholder(record):
            unfilled += 1
        try:
            formatted.append(fmt.convert(record))
        except (ValueError, KeyError, TypeError) as exc:
            reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            if isinstance(exc, KeyError):
                reason = f"missing field {reason!r}; the row has {sorted(record)}"
            raise UserError(f"{row_where} (format {ds.section.format!r}): {reason}") from None

    order = list(range(len(formatted)))
    if ds.section.shuffle:
        random.Random(seed).shuffle(order)
    n_eval = round(len(order) * ds.section.eval_fraction)
    if ds.section.eval_fraction > 0:
        n_eval = min(max(1, n_eval), len(order) - 1)
        if len(order) < 2:
            raise UserError(f"{where}: eval_fraction needs at least 2 rows, got {len(order)}")
    eval_rows = [formatted[i] for i in order[:n_eval]]
    train_rows = [formatted[i] for i in order[n_eval:]]

    fingerprint: dict[str, Any] = {
        "loader": ds.section.loader,
        "format": ds.section.format,
        "rows": len(records),
        "train_rows": len(train_rows),
        "eval_rows": len(eval_rows),
        "records_sha256": _digest(formatted),
        "split_sha256": _digest([order[:n_eval]]),
    }
    source = getattr(ds.loader.config, "path", None)
    if isinstance(source, str):
        path = ctx.resolve(source).resolve()
        if path.is_file():
            fingerprint["source"] = str(path)
            fingerprint["source_sha256"] = _file_digest(path)
    warnings = []
    if unfilled:
        warnings.append(
            f"{where}: {unfilled} rows contain {{{{...}}}} placeholders and no `placeholders` "
            "are set; they are trained on literally"
        )
    return Prepared(ds.name, fmt.produces, train_rows, eval_rows, fingerprint, warnings)


def _has_placeholder(record: Any) -> bool:
    if isinstance(record, str):
        return bool(_PLACEHOLDER.search(record))
    if isinstance(record, list):
        return any(_has_placeholder(v) for v in record)
    if isinstance(record, dict):
        return any(_has_placeholder(v) for v in record.values())
    return False
