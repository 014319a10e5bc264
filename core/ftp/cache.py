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
from ftp.tokenrows import VALUE_CODE, TokenRows

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


def store(key: CacheKey, write: Callable[[Path], None], description: str,
          extra: dict[str, Any] | None = None, root: Path | None = None) -> Path:
    """Write an entry atomically: ``write`` fills a temporary folder that is then renamed.

    Returns:
        The entry's folder.

    """
    root = root or cache_root()
    root.mkdir(parents=True, exist_ok=True)
    final = root / key.key
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{key.key}-", dir=root))
    try:
        (tmp / _TMP_MARKER).touch()
        write(tmp)
        meta = {"key": key.as_dict(), "description": description, "created": time.time(),
                **(extra or {})}
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
    from ftp.distributed.ranks import here, main_first

    # In a distributed run the main process fills the entry; the others read it after.
    with main_first(f"tokenizing ({description})"):
        folder = lookup(key, root)
        if folder is not None:
            try:
                return load(folder), True
            except Exception:  # noqa: BLE001 — any unreadable entry is rebuilt, never trusted
                if here().is_main:  # the others recompute for themselves
                    shutil.rmtree(folder, ignore_errors=True)
        value = compute()
        # A read-only or full disk costs the next run time, not this run.
        with contextlib.suppress(OSError):
            store(key, lambda tmp: save(value, tmp), description,
                  extra(value) if extra else None, root)
        return value, False


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

#: Ints read from ``rows.bin`` at a time, so no column is ever held twice while it is read.
_READ_CHUNK = 1 << 22


def save_rows(rows: Sequence[Mapping[str, Any]], folder: Path) -> None:
    """Write rows of int lists (``input_ids``, ``labels``...) or ints as flat int32 arrays.

    Every row has the same keys. ``rows.bin`` holds, per column, the values end to end; the
    row boundaries go to ``columns.json``. A `TokenRows` is written column by column as it is
    held (no row is read back into lists); a list of dicts gives the same bytes.
    """
    table = rows if isinstance(rows, TokenRows) else TokenRows(rows)
    columns: dict[str, Any] = {}
    start = 0
    with (folder / _ROWS).open("wb") as fh:
        for name in table.columns:
            values = table.values(name)
            values.tofile(fh)
            if table.is_sequence(name):
                columns[name] = {"kind": "seq", "start": start, "lengths": table.lengths(name)}
            else:
                columns[name] = {"kind": "int", "start": start}
            start += len(values)
    (folder / "columns.json").write_text(json.dumps({"rows": len(table), "columns": columns}),
                                         encoding="utf-8")


def load_rows(folder: Path) -> TokenRows:
    """Read rows written by `save_rows`, into flat arrays (no Python int per token)."""
    layout = json.loads((folder / "columns.json").read_text(encoding="utf-8"))
    n = layout["rows"]
    path = folder / _ROWS
    if _ints_in(layout) * array(VALUE_CODE).itemsize != path.stat().st_size:
        raise ValueError(f"cache entry {folder}: {_ROWS} has the wrong size")
    values: dict[str, array[int]] = {}
    lengths: dict[str, list[int] | None] = {}
    with path.open("rb") as fh:
        for name, col in layout["columns"].items():
            count = n if col["kind"] == "int" else sum(col["lengths"])
            fh.seek(col["start"] * array(VALUE_CODE).itemsize)
            column = array(VALUE_CODE)
            while len(column) < count:
                column.fromfile(fh, min(_READ_CHUNK, count - len(column)))
            values[name] = column
            lengths[name] = None if col["kind"] == "int" else col["lengths"]
    try:
        return TokenRows.from_arrays(n, values, lengths)
    except ValueError as exc:
        raise ValueError(f"cache entry {folder}: {exc}") from None


def _ints_in(layout: dict[str, Any]) -> int:
    """The number of ints a `save_rows` layout describes."""
    total = 0
    for col in layout["columns"].values():
        total += layout["rows"] if col["kind"] == "int" else sum(col["lengths"])
    return total
