"""Built-in data loaders: local JSON / JSON Lines / CSV / plain-text files, and the Hub."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ftp import DataLoader, LoadContext, StrictConfig, UserError, hookimpl


def _existing(ctx: LoadContext, path: str) -> Path:
    resolved = ctx.resolve(path)
    if not resolved.is_file():
        raise UserError(f"data file not found: {resolved}")
    return resolved


class JsonLoader(DataLoader):
    """Local JSON (a list of objects) or JSON Lines (one object per line) file."""

    name = "json"

    class Config(StrictConfig):
        """Options of the json loader."""

        path: str = Field(description="File path, relative to the pipeline file.")
        field: str | None = Field(
            None, description="For a JSON object holding the rows: the key of the list."
        )

    def load(self, ctx: LoadContext) -> list[dict[str, Any]]:
        """Read the file; JSON Lines when it ends in .jsonl or is not one JSON document."""
        path = _existing(ctx, self.config.path)
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            rows = self._lines(text, path)
        else:
            try:
                rows = json.loads(text)
            except json.JSONDecodeError as exc:
                if exc.msg == "Extra data":  # several documents: JSON Lines by another name
                    rows = self._lines(text, path)
                else:
                    raise UserError(
                        f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}"
                    ) from None
        if self.config.field is not None:
            if not isinstance(rows, dict) or self.config.field not in rows:
                raise UserError(f"{path}: no top-level key {self.config.field!r}")
            rows = rows[self.config.field]
        if not isinstance(rows, list):
            raise UserError(f"{path}: expected a list of objects at the top level "
                            "(or set `field` to the key that holds it)")
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise UserError(f"{path}: row {i} is a {type(row).__name__}, not an object")
        return rows

    @staticmethod
    def _lines(text: str, path: Path) -> list[Any]:
        rows = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{n}: invalid JSON: {exc.msg}") from None
        return rows


class CsvLoader(DataLoader):
    """Local CSV (or TSV) file with a header row."""

    name = "csv"

    class Config(StrictConfig):
        """Options of the csv loader."""

        path: str = Field(description="File path, relative to the pipeline file.")
        delimiter: str = Field(",", min_length=1, max_length=1)

    def load(self, ctx: LoadContext) -> list[dict[str, Any]]:
        """Read the rows as dicts keyed by the header."""
        path = _existing(ctx, self.config.path)
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh, delimiter=self.config.delimiter)
            if not reader.fieldnames:
                raise UserError(f"{path}: empty file or no header row")
            rows = []
            for n, row in enumerate(reader, start=2):
                if None in row:
                    raise UserError(f"{path}:{n}: more fields than the header has")
                rows.append(dict(row))
        return rows


# A paragraph ends at a line that is empty or holds only whitespace.
_BLANK_LINE = re.compile(r"\n[ \t\f\v]*\n")


class TextLoader(DataLoader):
    """Plain-text files as {"text": ...} documents: one per line, per paragraph, or per file."""

    name = "text"

    class Config(StrictConfig):
        """Options of the text loader."""

        path: str = Field(
            description="A text file, or a folder of them, relative to the pipeline file."
        )
        glob: str = Field(
            "*.txt", min_length=1,
            description="When path is a folder: which files to read, in sorted order "
            "('**/*.txt' for subfolders too).",
        )
        split: Literal["line", "paragraph", "file"] = Field(
            "line", description="One document per line, per blank-line separated paragraph, "
            "or per file.",
        )
        min_chars: int = Field(
            1, ge=1, description="Skip documents shorter than this, after trimming whitespace."
        )

    def load(self, ctx: LoadContext) -> list[dict[str, Any]]:
        """Read the file(s) and split them into documents, in file order."""
        cfg = self.config
        records: list[dict[str, Any]] = []
        skipped = 0
        for path in self._files(ctx):
            for doc in split_documents(_read_text(path), cfg.split):
                if len(doc) < cfg.min_chars:
                    skipped += 1
                    continue
                records.append({"text": doc})
        if not records:
            why = f" ({skipped} shorter than min_chars = {cfg.min_chars})" if skipped else ""
            raise UserError(f"{ctx.resolve(cfg.path)}: no text documents{why}")
        return records

    def _files(self, ctx: LoadContext) -> list[Path]:
        path = ctx.resolve(self.config.path)
        if path.is_file():
            return [path]
        if path.is_dir():
            files = sorted(p for p in path.glob(self.config.glob) if p.is_file())
            if not files:
                raise UserError(f"{path}: no files match glob {self.config.glob!r}")
            return files
        raise UserError(f"data file not found: {path}")


def split_documents(text: str, split: str) -> list[str]:
    """Split ``text`` into trimmed, non-empty documents by line, paragraph or whole file."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if split == "line":
        parts = text.split("\n")
    elif split == "paragraph":
        parts = _BLANK_LINE.split(text)
    else:
        parts = [text]
    return [p.strip() for p in parts if p.strip()]


def _read_text(path: Path) -> str:
    try:
        # utf-8-sig: a byte-order mark some editors write must not start the first document.
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start} cannot be decoded)") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot be read: {exc.strerror}") from None


class HubLoader(DataLoader):
    """A dataset on the Hugging Face Hub (or in its local cache), through `datasets`."""

    name = "hub"

    class Config(StrictConfig):
        """Options of the hub loader."""

        path: str = Field(description="Dataset id, e.g. 'tatsu-lab/alpaca'.")
        subset: str | None = Field(None, description="Configuration name, if any.")
        split: str = "train"
        revision: str | None = None

    def load(self, ctx: LoadContext) -> list[dict[str, Any]]:
        """Download (or read from cache) and return the split's rows."""
        import datasets

        try:
            ds = datasets.load_dataset(
                self.config.path, self.config.subset, split=self.config.split,
                revision=self.config.revision,
            )
        except Exception as exc:
            offline = _is_offline(exc)
            hint = (" — the Hub is not reachable (offline, or HF_HUB_OFFLINE=1) and the dataset "
                    "is not in the local cache; use a local file with loader = \"json\" or "
                    "\"csv\"") if offline else ""
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(
                f"could not load Hub dataset {self.config.path!r}: {first}{hint}"
            ) from None
        return [dict(row) for row in ds]


def _is_offline(exc: BaseException) -> bool:
    import os

    text = f"{type(exc).__name__} {exc}".lower()
    markers = ("offline", "connection", "couldn't reach", "could not reach", "resolve",
               "network", "max retries", "not find", "doesn't exist", "couldn't find")
    return os.environ.get("HF_HUB_OFFLINE") == "1" or any(m in text for m in markers)


@hookimpl
def ftp_data_loaders() -> list[type]:
    """Register the built-in loaders."""
    return [JsonLoader, CsvLoader, TextLoader, HubLoader]
