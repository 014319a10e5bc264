"""A disk cache of tokenized datasets that is never stale.

An entry is keyed on everything that decides the tokens: the records after formatting (their
content, not a file name), the tokenizer (its files and special tokens), the chat template,
the tokenization options (``max_length`` and the like) and the plugin that tokenizes (its
version and the source of its tokenizing code). Change any of them and the key changes, so
the data is tokenized again; an unchanged pipeline reuses the entry.

Entries live in ``$FTP_TOKENIZED_CACHE_DIR``, else ``$FTP_CACHE_DIR/tokenized``, else
``~/.cache/ftp/tokenized``: one folder per key holding ``meta.json`` and the payload. An
entry is written into a temporary folder and renamed into place, so an interrupted run never
leaves a half-written entry under a key; leftovers of interrupted writes (``.tmp-*``) are
ignored and removed by ``ftp cache clear``.

``ftp cache clear`` removes only what ftp wrote: an entry is recognised by its manifest
(``meta.json``, whose key parts hash to the folder's name) and a leftover by the marker ftp
puts in it first. Anything else in the cache folder (a file, someone else's folder, a cache
root pointed at the wrong place) is left alone.

Nothing here imports torch or transformers: the tokenizer is only asked for its attributes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import re
import shutil
import tempfile
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ftp.hashing import digest, file_digest
from ftp.tokenrows import OFFSET_CODE, VALUE_CODE, TokenRows

T = TypeVar("T")

#: Tokenizer files that decide how text becomes ids (weights and configs are left out).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt",
                   "tokenizer.model", "spiece.model", "sentencepiece.bpe.model",
                   "chat_template.jinja", "chat_template.json")
_META = "meta.json"
_ROWS = "rows.bin"
#: Put first into every temporary folder, so `clear` knows a leftover as ftp's own.
_TMP_MARKER = ".ftp-partial-entry"
_TMP_PREFIX = ".tmp-"
_KEY = re.compile(r"[0-9a-f]{32}")


def cache_root() -> Path:
    """The folder that holds the tokenized-data cache."""
    explicit = os.environ.get("FTP_TOKENIZED_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("FTP_CACHE_DIR", str(Path.home() / ".cache" / "ftp"))
    return Path(base).expanduser() / "tokenized"


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """What decides a tokenizer's ids: its files' hashes (or vocabulary) and special tokens.

    The tokenizer's folder (``name_or_path``) is hashed file by file; a tokenizer with no
    folder on disk is hashed by its serialised form or vocabulary instead. Special tokens are
    read from the live object, because a provider may set some (a pad token) after loading.
    """
    parts: dict[str, Any] = {"class": type(tokenizer).__name__}
    folder = Path(str(getattr(tokenizer, "name_or_path", "") or ""))
    files = {name: file_digest(folder / name) for name in TOKENIZER_FILES
             if folder.is_dir() and (folder / name).is_file()}
    if files:
        parts["files"] = files
    else:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None and hasattr(backend, "to_str"):
            parts["backend"] = hashlib.sha256(backend.to_str().encode("utf-8")).hexdigest()
        else:
            parts["vocab"] = digest(sorted(tokenizer.get_vocab().items()))
    parts["special"] = {
        "map": getattr(tokenizer, "special_tokens_map", {}),
        "ids": {name: getattr(tokenizer, f"{name}_token_id", None)
                for name in ("bos", "eos", "pad", "unk", "sep", "cls", "mask")},
        "added": sorted(str(t) for t in getattr(tokenizer, "all_special_tokens", [])),
        "add_bos": getattr(tokenizer, "add_bos_token", None),
        "add_eos": getattr(tokenizer, "add_eos_token", None),
    }
    return digest(parts)


def template_fingerprint(tokenizer: Any) -> str:
    """Hash of the chat template in use (read live: a pipeline may set its own)."""
    return digest(getattr(tokenizer, "chat_template", None))


@dataclass(frozen=True)
class CacheKey:
    """The parts an entry is keyed on; `key` is their joint hash."""

    data: str
    tokenizer: str
    template: str
    options: str
    plugin: str

    @property
    def key(self) -> str:
        """The entry's name: a hash of every part."""
        return digest([self.data, self.tokenizer, self.template, self.options, self.plugin])[:32]

    def as_dict(self) -> dict[str, str]:
        """The parts, for ``meta.json``."""
        return {"data": self.data, "tokenizer": self.tokenizer, "template": self.template,
                "options": self.options, "plugin": self.plugin}


def make_key(records: Sequence[Any], tokenizer: Any, options: dict[str, Any],
             plugin: dict[str, Any]) -> CacheKey:
    """The cache key for tokenizing ``records`` with ``tokenizer``.

    Args:
        records: The records after formatting, exactly as they are tokenized.
        tokenizer: The tokenizer, with its chat template set as it will be used.
        options: Every option that changes the tokens (``max_length``, loss masking...),
            and the method's name.
        plugin: Who tokenizes: plugin name, version and a hash of its tokenizing code.

    """
    return CacheKey(data=digest(records), tokenizer=tokenizer_fingerprint(tokenizer),
                    template=template_fingerprint(tokenizer), options=digest(options),
                    plugin=digest(plugin))


@dataclass
class Entry:
    """One cached tokenized dataset, as ``ftp cache ls`` shows it."""

    key: str
    path: Path
    size: int
    created: float
    meta: dict[str, Any]

    @property
    def description(self) -> str:
        """What was tokenized, in words."""
        return str(self.meta.get("description", ""))


def lookup(key: CacheKey, root: Path | None = None) -> Path | None:
    """The folder of a complete entry for ``key``, or None."""
    folder = (root or cache_root()) / key.key
    return folder if (folder / _META).is_file() else None


def store(key: CacheKey, write: Callable[[Path], dict[str, Any] | None], description: str,
          extra: dict[str, Any] | None = None, root: Path | None = None) -> Path:
    """Write an entry atomically: ``write`` fills a temporary folder that is then renamed.

    What ``write`` returns (a dict, or None) joins ``extra`` in the entry's ``meta.json``.

    Returns:
        The entry's folder.

    """
    root = root or cache_root()
    root.mkdir(parents=True, exist_ok=True)
    final = root / key.key
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{key.key}-", dir=root))
    try:
        (tmp / _TMP_MARKER).touch()
        written = write(tmp)
        meta = {"key": key.as_dict(), "description": description, "created": time.time(),
                **(extra or {}), **(written or {})}
        (tmp / _META).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        (tmp / _TMP_MARKER).unlink()
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process stored the same key first; its entry is as good as ours.
            if not (final / _META).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def cached(key: CacheKey, compute: Callable[[], T], save: Callable[[T, Path], None],
           load: Callable[[Path], T], description: str,
           extra: Callable[[T], dict[str, Any]] | None = None,
           root: Path | None = None) -> tuple[T, bool]:
    """``load`` the entry for ``key`` if there is one, else ``compute``, ``save`` and return it.

    An entry that cannot be read (a disk error, a format from another ftp version) counts as
    missing and is replaced.

    Returns:
        The value and whether it came from the cache.

    """
    from ftp.distributed.ranks import main_first

    # In a distributed run the main process fills the entry; the others read it after.
    with main_first(f"tokenizing ({description})"):
        found = _load_entry(key, load, root)
        if found is not None:
            return found[0], True
        value = compute()
        # A read-only or full disk costs the next run time, not this run.
        with contextlib.suppress(OSError):
            store(key, lambda tmp: save(value, tmp), description,
                  extra(value) if extra else None, root)
        return value, False


def _load_entry(key: CacheKey, load: Callable[[Path], T], root: Path | None
                ) -> tuple[T] | None:
    """``(load(entry),)`` for a readable entry of ``key``, else None (an unreadable one removed).

    An entry that cannot be read (a disk error, a layout from another ftp version) counts as
    missing; the main process deletes it, so that it is rebuilt.
    """
    from ftp.distributed.ranks import here

    folder = lookup(key, root)
    if folder is None:
        return None
    try:
        return (load(folder),)
    except Exception:  # noqa: BLE001 — any unreadable entry is rebuilt, never trusted
        if here().is_main:  # the others recompute for themselves
            shutil.rmtree(folder, ignore_errors=True)
        return None


def cached_folder(key: CacheKey, fill: Callable[[Path], dict[str, Any]],
                  load: Callable[[Path], T], description: str,
                  root: Path | None = None) -> tuple[T, bool]:
    """Like `cached`, for a value written straight into the entry's folder as it is made.

    On a miss ``fill`` writes the entry's files (and returns what ``meta.json`` should add),
    and the value is then ``load``-ed from the stored entry, so a value larger than memory
    is never held whole. Where the cache cannot be written (a read-only or full disk), the
    folder is filled under the system's temporary folder instead, loaded, and deleted (what
    ``load`` mapped stays readable until let go).

    Returns:
        The value and whether it came from the cache.

    """
    from ftp.distributed.ranks import main_first

    with main_first(f"tokenizing ({description})"):
        found = _load_entry(key, load, root)
        if found is not None:
            return found[0], True
        try:
            folder = store(key, fill, description, root=root)
        except OSError:
            # A read-only or full disk costs the next run time, not this run.
            scratch = Path(tempfile.mkdtemp(prefix="ftp-tokenized-"))
            try:
                fill(scratch)
                return load(scratch), False
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        return load(folder), False


def entries(root: Path | None = None) -> list[Entry]:
    """Every complete entry, oldest first."""
    root = root or cache_root()
    if not root.is_dir():
        return []
    out = []
    for folder in root.iterdir():
        meta = _manifest(folder)
        if meta is None:
            continue
        out.append(Entry(folder.name, folder, _size(folder), float(meta.get("created", 0.0)),
                         meta))
    return sorted(out, key=lambda e: e.created)


def _manifest(folder: Path) -> dict[str, Any] | None:
    """An entry's ``meta.json`` when ``folder`` is an entry ftp wrote, else None.

    The proof is the manifest itself: its key parts hash to the folder's name.
    """
    if folder.is_symlink() or not folder.is_dir() or not _KEY.fullmatch(folder.name):
        return None
    try:
        meta = json.loads((folder / _META).read_text(encoding="utf-8"))
        key = CacheKey(**meta["key"]).key
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return meta if key == folder.name else None


def _leftover(folder: Path) -> bool:
    """Whether ``folder`` is what an interrupted `store` left: ftp's marker, or empty."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    name = folder.name
    if not (name.startswith(_TMP_PREFIX) and _KEY.match(name, len(_TMP_PREFIX))):
        return False
    return (folder / _TMP_MARKER).is_file() or not any(folder.iterdir())


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def clear(root: Path | None = None) -> tuple[int, int]:
    """Delete the entries and leftovers ftp wrote; return (entries, bytes) removed.

    Anything else in ``root`` is kept (see the module's notes).
    """
    root = root or cache_root()
    if not root.is_dir():
        return 0, 0
    count = size = 0
    for folder in root.iterdir():
        is_entry = _manifest(folder) is not None
        if not (is_entry or _leftover(folder)):
            continue
        size += _size(folder)
        count += is_entry
        shutil.rmtree(folder, ignore_errors=True)
    return count, size


# -- rows of token ids ------------------------------------------------------------------------

#: The layout `RowsWriter` writes and `load_rows` reads; an entry of another layout is rebuilt.
ROWS_FORMAT = 2
_COLUMNS = "columns.json"
#: Bytes copied at a time when parts are joined, so no part is ever held whole.
_COPY_CHUNK = 1 << 24


class RowsWriter:
    """Writes rows of token ids into a folder part by part, as they are made.

    Each column goes to files of its own, appended to as parts come: ``N.values`` (int32, the
    rows' ids end to end) and, for a sequence column, ``N.starts`` (int64, where each row
    starts, and the end); ``columns.json`` (written by `close`) names the columns and counts
    the rows. So a million rows are written without ever being held together, and read back
    by `load_rows` as a view of the files.

    Args:
        folder: An existing, empty folder (a cache entry's temporary folder).

    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.rows = 0
        self._columns: dict[str, dict[str, Any]] = {}

    def add(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append rows (a `TokenRows`, or dicts of int lists and ints, all with one set of keys).

        Raises:
            ValueError: when the rows' columns differ from the first part's.

        """
        table = TokenRows.of(rows)
        if not len(table):
            return
        self._check(table.columns, {name: table.is_sequence(name) for name in table.columns})
        for name, col in self._columns.items():
            with self._file(col, "values").open("ab") as fh:
                fh.write(memoryview(table.values(name)).cast("B"))
            if col["kind"] == "seq":
                starts = array(OFFSET_CODE, table.offsets(name))
                base = col["values"]
                if base:  # rebased onto what the column already holds
                    starts = array(OFFSET_CODE, (base + s for s in starts))
                with self._file(col, "starts").open("ab") as fh:
                    # The part's first start is the previous part's end, already written.
                    fh.write(memoryview(starts).cast("B")[0 if not self.rows else 8:])
            col["values"] += len(table.values(name))
        self.rows += len(table)

    def add_folder(self, part: Path) -> None:
        """Append the rows another `RowsWriter` wrote into ``part``, copying in chunks.

        Raises:
            ValueError: when the part's columns differ from what was added before.

        """
        layout = _layout(part)
        if not layout["rows"]:
            return
        theirs = layout["columns"]
        self._check(list(theirs), {name: c["kind"] == "seq" for name, c in theirs.items()})
        for name, col in self._columns.items():
            other = theirs[name]
            with self._file(col, "values").open("ab") as out, \
                    _column_file(part, other, "values").open("rb") as src:
                shutil.copyfileobj(src, out, _COPY_CHUNK)
            if col["kind"] == "seq":
                base, first = col["values"], self.rows == 0
                with self._file(col, "starts").open("ab") as out, \
                        _column_file(part, other, "starts").open("rb") as src:
                    if not first:
                        src.seek(array(OFFSET_CODE).itemsize)  # its 0: our end, written
                    while chunk := src.read(_COPY_CHUNK):
                        starts = array(OFFSET_CODE)
                        starts.frombytes(chunk)
                        out.write(memoryview(array(OFFSET_CODE, (base + s for s in starts))
                                             if base else starts).cast("B"))
            col["values"] += other["values"]
        self.rows += layout["rows"]

    def close(self) -> None:
        """Write ``columns.json``: the rows are complete."""
        (self.folder / _COLUMNS).write_text(json.dumps(
            {"format": ROWS_FORMAT, "rows": self.rows, "columns": self._columns}),
            encoding="utf-8")

    def _check(self, names: list[str], sequence: dict[str, bool]) -> None:
        if not self._columns:
            self._columns = {name: {"file": str(i), "kind": "seq" if sequence[name] else "int",
                                    "values": 0} for i, name in enumerate(names)}
        if list(self._columns) != names or any(
                (c["kind"] == "seq") != sequence[n] for n, c in self._columns.items()):
            raise ValueError(f"columns {names} differ from the first part's "
                             f"{list(self._columns)}")

    def _file(self, col: dict[str, Any], what: str) -> Path:
        return _column_file(self.folder, col, what)


def save_rows(rows: Sequence[Mapping[str, Any]], folder: Path) -> None:
    """Write rows of int lists (``input_ids``, ``labels``...) or ints, as `RowsWriter` does.

    A `TokenRows` is written column by column as it is held (no row is read back into lists);
    a list of dicts gives the same bytes.
    """
    writer = RowsWriter(folder)
    writer.add(rows)
    writer.close()


def load_rows(folder: Path) -> TokenRows:
    """Rows written by `RowsWriter`, as read-only views of its files mapped into memory.

    Nothing is read here: a batch's rows are paged in when the trainer reads them, and the
    kernel may drop them again, so the tokens do not count against the run's memory. The
    views stay valid if the entry is deleted meanwhile (``ftp cache clear`` unlinks files; the
    mapping keeps them until the rows are let go).

    Raises:
        ValueError: for an entry of another layout, or whose files do not match it.

    """
    layout = _layout(folder)
    n = layout["rows"]
    values: dict[str, memoryview | array[int]] = {}
    offsets: dict[str, memoryview | array[int] | None] = {}
    for name, col in layout["columns"].items():  # none when there are no rows
        count = n if col["kind"] == "int" else col["values"]
        values[name] = _mapped(_column_file(folder, col, "values"), VALUE_CODE, count)
        offsets[name] = None if col["kind"] == "int" else \
            _mapped(_column_file(folder, col, "starts"), OFFSET_CODE, n + 1)
    try:
        return TokenRows.from_offsets(n, values, offsets)
    except ValueError as exc:
        raise ValueError(f"cache entry {folder}: {exc}") from None


def _layout(folder: Path) -> dict[str, Any]:
    """A rows folder's ``columns.json``, checked to be the layout this version writes."""
    layout = json.loads((folder / _COLUMNS).read_text(encoding="utf-8"))
    if layout.get("format") != ROWS_FORMAT:
        raise ValueError(f"cache entry {folder}: rows of layout {layout.get('format', 1)}, "
                         f"not {ROWS_FORMAT}")
    return layout


def _column_file(folder: Path, col: dict[str, Any], what: str) -> Path:
    return folder / f"{col['file']}.{what}"


def _mapped(path: Path, code: str, count: int) -> memoryview | array[int]:
    """``count`` ints of type ``code`` in ``path``, as a read-only view of the mapped file.

    Raises:
        ValueError: when the file does not hold exactly that many.

    """
    size = array(code).itemsize * count
    if not path.is_file() or path.stat().st_size != size:
        raise ValueError(f"{path.name} does not hold {count} values")
    if not count:
        return array(code)  # an empty file cannot be mapped
    with path.open("rb") as fh:
        # The mapping outlives the file object (and the file's name, if it is deleted).
        mapped = mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_READ)
    view: Any = memoryview(mapped)  # typeshed's cast() wants a literal format
    return view.cast(code)
