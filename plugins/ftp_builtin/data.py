"""Built-in data loaders: local files, `datasets.save_to_disk` folders, and the Hub.

Local files are JSON / JSON Lines, CSV / TSV, Parquet and plain text.
Every file loader takes a file, a glob (``data/*.jsonl``) or a folder as ``path`` and reads
the files in sorted order. Each record's origin (``file:line``, ``file:line (item N)`` for an
item of a JSON array, or ``file[index]``) is noted on
the `LoadContext`, so a problem found later names the place; rows the loader itself cannot use
(invalid JSON, undecodable bytes, not an object, wrong field count) go to
`LoadContext.bad_row`, which stops the run or, with ``on_bad_rows = "skip"``, counts them.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ftp import DataLoader, LoadContext, StrictConfig, UserError, hookimpl

UNDECODABLE = "undecodable bytes (not UTF-8)"
NOT_AN_OBJECT = "not an object"
INVALID_JSON = "invalid JSON"

# Bytes that are not UTF-8 decode, with errors="surrogateescape", to these code points; no
# valid UTF-8 text holds them, so finding one marks the row that held the bad bytes.
_ESCAPED = re.compile("[\udc80-\udcff]")


def _read(path: Path) -> str:
    """The file as text; bytes that are not UTF-8 kept as lone surrogates for `_undecodable`."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot be read: {exc.strerror}") from None
    # A byte-order mark some editors write must not start the first row.
    return data.decode("utf-8-sig", errors="surrogateescape")


def _stream_lines(path: Path) -> Iterator[str]:
    """A JSON Lines file's lines, read one at a time (the file is never whole in memory).

    Decoded as `_read` decodes: a leading byte-order mark dropped, bytes that are not UTF-8
    kept as lone surrogates; lines split at ``\\n`` only, as ``str.split("\\n")`` splits.
    """
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise UserError(f"{path}: cannot be read: {exc.strerror}") from None
    with fh:
        first = True
        for raw in fh:
            line = raw.decode("utf-8-sig" if first else "utf-8", errors="surrogateescape")
            first = False
            yield line[:-1] if line.endswith("\n") else line


_SPACE = re.compile(r"[ \t\n\r]*")


def _item_lines(text: str) -> list[int] | None:
    """The line (1-based) each item of a top-level JSON array starts on; None if not one.

    Called on text ``json.loads`` has already accepted, so it does not re-check the syntax.
    """
    pos = _SPACE.match(text, 0).end()  # type: ignore[union-attr]
    if not text.startswith("[", pos):
        return None
    decoder = json.JSONDecoder()
    lines: list[int] = []
    line, counted = 1, 0
    pos += 1
    while True:
        pos = _SPACE.match(text, pos).end()  # type: ignore[union-attr]
        if pos >= len(text) or text[pos] == "]":
            return lines
        line += text.count("\n", counted, pos)
        counted = pos
        lines.append(line)
        _, pos = decoder.raw_decode(text, pos)
        pos = _SPACE.match(text, pos).end()  # type: ignore[union-attr]
        if text.startswith(",", pos):
            pos += 1


def _undecodable(value: Any) -> bool:
    """Whether a string anywhere in ``value`` holds bytes that were not UTF-8."""
    if isinstance(value, str):
        return bool(_ESCAPED.search(value))
    if isinstance(value, list):
        return any(_undecodable(v) for v in value)
    if isinstance(value, dict):
        return any(_undecodable(k) or _undecodable(v) for k, v in value.items())
    return False


class _FileOptions(StrictConfig):
    """Options every file loader has."""

    path: str = Field(
        description="A file, a glob ('data/*.jsonl', 'data/**/*.csv') or a folder, relative "
        "to the pipeline file."
    )
    glob: str | None = Field(
        None, min_length=1,
        description="When path is a folder: which files to read ('**/*.jsonl' for subfolders "
        "too); by default those with the loader's file extensions.",
    )


class _FileLoader(DataLoader):
    """A loader of local files named by ``path`` (and ``glob``): validation checks they exist."""

    suffixes: tuple[str, ...] = ()
    #: Its subclasses' options all have ``path`` and ``glob``.
    config: Any

    def check_files(self, base_dir: Path) -> list[tuple[str, str]]:
        """``path`` names at least one file, exactly as `load` will look for them."""
        try:
            LoadContext("", base_dir).expand(self.config.path, self.config.glob, self.suffixes)
        except UserError as exc:
            return [("path", str(exc))]
        return []


class JsonLoader(_FileLoader):
    """Local JSON (a list of objects) or JSON Lines (one object per line) files."""

    name = "json"
    suffixes = (".json", ".jsonl")

    class Config(_FileOptions):
        """Options of the json loader."""

        field: str | None = Field(
            None, description="For a JSON object holding the rows: the key of the list."
        )

    config: Config

    def load(self, ctx: LoadContext) -> list[dict[str, Any]]:
        """Read each file; JSON Lines when it ends in .jsonl or is not one JSON document."""
        return list(self.rows(ctx))

    def rows(self, ctx: LoadContext) -> Iterator[dict[str, Any]]:
        """`load`'s rows one at a time: a .jsonl file is read a line at a time.

        A JSON document (an array) is parsed whole first — the standard library has no
        incremental parser — and its items are then given one at a time.
        """
        for path in ctx.expand(self.config.path, self.config.glob, self.suffixes):
            yield from self._file(ctx, path)

    def _file(self, ctx: LoadContext, path: Path) -> Iterator[dict[str, Any]]:
        if path.suffix.lower() == ".jsonl":
            yield from self._lines(ctx, _stream_lines(path), path)
            return
        text = _read(path)
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            if exc.msg == "Extra data":  # several documents: JSON Lines by another name
                yield from self._lines(ctx, text, path)
                return
            # One broken document has no rows to skip: the whole file is unreadable.
            raise UserError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg} (column "
                            f"{exc.colno}); the file is one JSON document, so no row of it "
                            "can be read") from None
        if self.config.field is not None:
            if not isinstance(doc, dict) or self.config.field not in doc:
                raise UserError(f"{path}: no top-level key {self.config.field!r}")
            doc = doc[self.config.field]
        if not isinstance(doc, list):
            raise UserError(f"{path}: expected a list of objects at the top level "
                            "(or set `field` to the key that holds it)")
        # A top-level array's items are named by line too, so an editor can jump to them.
        lines = _item_lines(text) if self.config.field is None else None
        del text  # the parsed items are what is read from here on
        for i in range(len(doc)):
            row, doc[i] = doc[i], None  # given away: the document does not keep it
            where = f"{path}:{lines[i]} (item {i})" if lines else f"{path}[{i}]"
            if not isinstance(row, dict):
                ctx.bad_row(where, NOT_AN_OBJECT, f"a JSON {_json_type(row)}")
            elif _undecodable(row):
                ctx.bad_row(where, UNDECODABLE)
            else:
                yield ctx.origin(row, where)

    @staticmethod
    def _lines(ctx: LoadContext, text: str | Iterator[str], path: Path
               ) -> Iterator[dict[str, Any]]:
        lines = text.split("\n") if isinstance(text, str) else text
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            if _undecodable(line):
                ctx.bad_row(where, UNDECODABLE)
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                ctx.bad_row(where, INVALID_JSON, f"{exc.msg} at column {exc.colno}")
                continue
            if not isinstance(row, dict):
                ctx.bad_row(where, NOT_AN_OBJECT, f"a JSON {_json_type(row)}")
                continue
            yield ctx.origin(row, where)


def _json_type(value: Any) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


class CsvLoader(_FileLoader):
    """Local CSV or TSV files with a header row; each row becomes an object keyed by it."""

    name = "csv"
    suffixes = (".csv", ".tsv")

    class Config(_FileOptions):
        """Options of the csv loader."""

        delimiter: str | None = Field(
            None, min_length=1, max_length=1,
            description="One character; by default a tab for .tsv files, else a comma.",
        )

    config: Config

    def load(self, ctx: LoadContext) -> list[dict[str, Any]]:
        """Read every file's rows as dicts keyed by its header."""
        return list(self.rows(ctx))

    def rows(self, ctx: LoadContext) -> Iterator[dict[str, Any]]:
        """`load`'s rows one at a time, each file read as it goes."""
        for path in ctx.expand(self.config.path, self.config.glob, self.suffixes):
            yield from self._file(ctx, path)

    def _file(self, ctx: LoadContext, path: Path) -> Iterator[dict[str, Any]]:
        delimiter = self.config.delimiter
        if delimiter is None:
            delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        # The csv module refuses fields over 128 KiB by default; a document may be longer.
        csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
        # Decoded as `_read` decodes (a byte-order mark dropped, bad bytes kept escaped).
        try:
            fh = path.open(encoding="utf-8-sig", errors="surrogateescape", newline="")
        except OSError as exc:
            raise UserError(f"{path}: cannot be read: {exc.strerror}") from None
        with fh:
            yield from self._read_rows(ctx, path, csv.DictReader(fh, delimiter=delimiter))

    @staticmethod
    def _read_rows(ctx: LoadContext, path: Path, reader: csv.DictReader[str]
                   ) -> Iterator[dict[str, Any]]:
        try:
            if not reader.fieldnames:
                raise UserError(f"{path}: empty file or no header row")
            width = len(reader.fieldnames)
            for row in reader:
                # line_num is the line the row ends on: a quoted field may span lines.
                where = f"{path}:{reader.line_num}"
                if None in row:
                    ctx.bad_row(where, "more fields than the header",
                                f"{width + len(row[None])} fields, the header has {width}")
                elif None in row.values():
                    given = sum(v is not None for v in row.values())
                    ctx.bad_row(where, "fewer fields than the header",
                                f"{given} fields, the header has {width}")
                elif _undecodable(row):
                    ctx.bad_row(where, UNDECODABLE)
                else:
                    yield ctx.origin(dict(row), where)
        except csv.Error as exc:
            raise UserError(f"{path}:{reader.line_num}: not readable as CSV: {exc}") from None


class ParquetLoader(_FileLoader):
    """Local Parquet files (through pyarrow); each row becomes an object keyed by column."""

    name = "parquet"
    suffixes = (".parquet",)

    class Config(_FileOptions):
        """Options of the parquet loader."""

        columns: list[str] | None = Field(
            None, description="Read only these columns (default: all)."
        )

    config: Config

    def load(self, ctx: LoadContext) -> list[dict[str, Any]]:
        """Read every file's rows."""
        return list(self.rows(ctx))

    def rows(self, ctx: LoadContext) -> Iterator[dict[str, Any]]:
        """`load`'s rows, each file read a record batch at a time."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        for path in ctx.expand(self.config.path, self.config.glob, self.suffixes):
            i = 0
            try:
                batches = pq.ParquetFile(path).iter_batches(columns=self.config.columns)
                for batch in batches:
                    for row in batch.to_pylist():
                        yield ctx.origin(row, f"{path}[{i}]")
                        i += 1
            except (pa.ArrowException, OSError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise UserError(f"{path}: not readable as Parquet: {first}") from None


# A paragraph ends at a line that is empty or holds only whitespace.
_BLANK_LINE = re.compile(r"\n[ \t\f\v]*\n")


class TextLoader(_FileLoader):
    """Plain-text files as {"text": ...} documents: one per line, per paragraph, or per file."""

    name = "text"

    class Config(_FileOptions):
        """Options of the text loader."""

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

    config: Config

    def load(self, ctx: LoadContext) -> list[dict[str, Any]]:
        """Read the file(s) and split them into documents, in file order."""
        cfg = self.config
        records: list[dict[str, Any]] = []
        short = 0
        for path in ctx.expand(cfg.path, cfg.glob):
            for line, doc in numbered_documents(_read(path), cfg.split):
                where = str(path) if cfg.split == "file" else f"{path}:{line}"
                if _undecodable(doc):
                    ctx.bad_row(where, UNDECODABLE)
                elif len(doc) < cfg.min_chars:
                    short += 1
                else:
                    records.append(ctx.origin({"text": doc}, where))
        if not records and not ctx.skipped:
            why = f" ({short} shorter than min_chars = {cfg.min_chars})" if short else ""
            raise UserError(f"{ctx.resolve(cfg.path)}: no text documents{why}")
        return records


def numbered_documents(text: str, split: str) -> list[tuple[int, str]]:
    """Split ``text`` into trimmed, non-empty documents, each with the line it starts on."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if split == "line":
        parts = [(n, line) for n, line in enumerate(text.split("\n"), start=1)]
    elif split == "paragraph":
        parts, pos = [], 0
        for m in [*_BLANK_LINE.finditer(text), None]:
            end = m.start() if m else len(text)
            parts.append((text.count("\n", 0, pos) + 1, text[pos:end]))
            pos = m.end() if m else len(text)
    else:
        parts = [(1, text)]
    out = []
    for line, part in parts:
        stripped = part.strip()
        if stripped:
            # The document starts on the first line that holds something.
            lead = part[: len(part) - len(part.lstrip())]
            out.append((line + lead.count("\n"), stripped))
    return out


def split_documents(text: str, split: str) -> list[str]:
    """Split ``text`` into trimmed, non-empty documents by line, paragraph or whole file."""
    return [doc for _, doc in numbered_documents(text, split)]


class DiskLoader(DataLoader):
    """A folder written by `datasets` ``save_to_disk``: a Dataset, or a DatasetDict's split."""

    name = "disk"

    class Config(StrictConfig):
        """Options of the disk loader."""

        path: str = Field(description="The folder, relative to the pipeline file.")
        split: str | None = Field(
            None, description="For a DatasetDict: which split (default 'train', or the only "
            "one). Not allowed for a single Dataset.",
        )

    config: Config

    def check_files(self, base_dir: Path) -> list[tuple[str, str]]:
        """The folder exists (whether `datasets` can read it is found out when loading)."""
        path = LoadContext("", base_dir).resolve(self.config.path)
        return [] if path.is_dir() else [("path", f"dataset folder not found: {path}")]

    def load(self, ctx: LoadContext) -> list[dict[str, Any]]:
        """Read the saved dataset's rows."""
        import datasets

        path = ctx.resolve(self.config.path)
        if not path.is_dir():
            raise UserError(f"dataset folder not found: {path}")
        try:
            saved = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"{path}: not a folder written by save_to_disk: {first}") from None
        split = self.config.split
        if isinstance(saved, datasets.DatasetDict):
            names = list(saved)
            if split is None:
                split = "train" if "train" in saved or len(names) != 1 else names[0]
            if split not in saved:
                raise UserError(f"{path}: no split {split!r}; splits: {', '.join(names)}")
            saved = saved[split]
            label = f"{path}[{split}]"
        elif split is not None:
            raise UserError(f"{path}: holds one dataset, not splits; remove split = {split!r}")
        else:
            label = str(path)
        ctx.files.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        return [ctx.origin(dict(row), f"{label}[{i}]") for i, row in enumerate(saved)]


class HubLoader(DataLoader):
    """A dataset on the Hugging Face Hub (or in its local cache), through `datasets`."""

    name = "hub"

    class Config(StrictConfig):
        """Options of the hub loader."""

        path: str = Field(description="Dataset id, e.g. 'tatsu-lab/alpaca'.")
        subset: str | None = Field(None, description="Configuration name, if any.")
        split: str = Field("train", description="Which split of the Hub dataset.")
        revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")

    config: Config

    def load(self, ctx: LoadContext) -> list[dict[str, Any]]:
        """Download (or read from cache) and return the split's rows."""
        import datasets

        cfg = self.config
        try:
            ds = datasets.load_dataset(cfg.path, cfg.subset, split=cfg.split,
                                       revision=cfg.revision)
        except Exception as exc:
            offline = _is_offline(exc)
            hint = (" — the Hub is not reachable (offline, or HF_HUB_OFFLINE=1) and the dataset "
                    "is not in the local cache; use a local file with loader = \"json\" or "
                    "\"csv\"") if offline else ""
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"could not load Hub dataset {cfg.path!r}: {first}{hint}") from None
        return [ctx.origin(dict(row), f"{cfg.path}[{cfg.split}][{i}]")
                for i, row in enumerate(ds)]


def _is_offline(exc: BaseException) -> bool:
    import os

    text = f"{type(exc).__name__} {exc}".lower()
    markers = ("offline", "connection", "couldn't reach", "could not reach", "resolve",
               "network", "max retries", "not find", "doesn't exist", "couldn't find")
    return os.environ.get("HF_HUB_OFFLINE") == "1" or any(m in text for m in markers)


@hookimpl
def ftp_data_loaders() -> list[type]:
    """Register the built-in loaders."""
    return [JsonLoader, CsvLoader, ParquetLoader, TextLoader, DiskLoader, HubLoader]
