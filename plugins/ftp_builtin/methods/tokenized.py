"""Tokenizing through the cache, and showing what the methods train on.

The built-in methods tokenize through `cached_rows` / `cached_dataset` (``ftp.cache``): the key
holds the records, the tokenizer and template, the method's tokenization options and this
plugin's identity: its version and a hash of the source files that tokenize, so that a changed
tokenizer module never reuses old tokens even without a version bump.

`preference_examples` renders preference records the way the DPO/KTO trainers tokenize and fit
them, for ``ftp data preview``; it needs the tokenizer only.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import ModuleType
from typing import Any

from ftp import TrainContext
from ftp.cache import RowsWriter, cached, cached_folder, load_rows, make_key
from ftp.components import IGNORE_INDEX, TokenizedExample, TokenSequence
from ftp.tokenrows import TokenRows
from ftp_builtin.tokenize import common_prefix, render
from ftp_builtin.truncation import TruncationMode, fit_pair

PLUGIN = "ftp_builtin"

#: Rows of token-id columns: a list of dicts, or the same held as arrays (`TokenRows`).
RowsOfIds = Sequence[Mapping[str, Any]]


def plugin_identity(*modules: ModuleType) -> dict[str, str]:
    """The plugin's version and a hash of the given modules' source (the tokenizing code)."""
    try:
        ver = version("ftp")
    except PackageNotFoundError:
        ver = "?"
    h = hashlib.sha256()
    for module in modules:
        source = getattr(module, "__file__", None)
        if source:
            h.update(Path(source).read_bytes())
    return {"plugin": PLUGIN, "version": ver, "code": h.hexdigest()}


def announce(split: str, hit: bool, rows: int, seconds: float) -> None:
    """Say on the terminal whether the tokens came from the cache.

    (Methods also record it as ``cached`` in their ``tokenized`` event of metrics.jsonl.)
    """
    if hit:
        print(f"  tokenized {split}: cached ({rows} rows)", flush=True)
    else:
        print(f"  tokenized {split}: {rows} rows in {seconds:.1f}s (cached for the next run)",
              flush=True)


def cached_rows(ctx: TrainContext, split: str, records: Sequence[dict[str, Any]],
                options: dict[str, Any], plugin: dict[str, str],
                compute: Callable[[], tuple[RowsOfIds, dict[str, Any]]] | None = None, *,
                write: Callable[[RowsWriter], dict[str, Any]] | None = None
                ) -> tuple[TokenRows, dict[str, Any], bool]:
    """Rows of token ids (and JSON-able counts) for ``records``, from the cache when unchanged.

    The rows come back as a `TokenRows` mapped from the cache entry's files (computed rows
    are written there first), so the tokens are not held in memory whatever their number.

    Returns:
        The rows, the counts, and whether they came from the cache.

    Args:
        ctx: The stage's context (its tokenizer, and where to log).
        split: ``train`` or ``eval``, for messages.
        records: The formatted records.
        options: The method's name and every option that changes the tokens.
        plugin: `plugin_identity` of the tokenizing modules.
        compute: Tokenizes; returns the rows and counts (truncated, tokens...).
        write: Instead of ``compute``: tokenizes into the writer as it goes (rows never
            held whole) and returns the counts.

    """
    if (compute is None) == (write is None):
        raise TypeError("cached_rows takes one of compute and write")
    key = make_key(records, ctx.tokenizer, options, plugin)

    def fill(folder: Path) -> dict[str, Any]:
        writer = RowsWriter(folder)
        if write is not None:
            counts = write(writer)
        else:
            assert compute is not None
            rows, counts = compute()
            writer.add(rows)
            del rows  # the copy in memory goes; the rows are read back from the files
        writer.close()
        (folder / "counts.json").write_text(json.dumps(counts), encoding="utf-8")
        return {"rows": writer.rows}

    def load(folder: Path) -> tuple[TokenRows, dict[str, Any]]:
        counts = json.loads((folder / "counts.json").read_text(encoding="utf-8"))
        return load_rows(folder), counts

    start = time.perf_counter()
    value, hit = cached_folder(key, fill, load, _description(ctx, split, options, records))
    announce(split, hit, len(value[0]), time.perf_counter() - start)
    return value[0], value[1], hit


def cached_dataset(ctx: TrainContext, split: str, records: Sequence[dict[str, Any]],
                   options: dict[str, Any], plugin: dict[str, str],
                   compute: Callable[[], Any]) -> Any:
    """A tokenized ``datasets.Dataset`` (any columns), from the cache when unchanged."""
    from datasets import load_from_disk

    key = make_key(records, ctx.tokenizer, options, plugin)
    start = time.perf_counter()
    value, hit = cached(
        key, compute,
        lambda ds, folder: ds.save_to_disk(str(folder / "dataset")),
        # In memory: clearing the cache during training must not pull the data away.
        lambda folder: load_from_disk(str(folder / "dataset"), keep_in_memory=True),
        _description(ctx, split, options, records), lambda ds: {"rows": len(ds)})
    announce(split, hit, len(value), time.perf_counter() - start)
    return value


def _description(ctx: TrainContext, split: str, options: dict[str, Any],
                 records: Sequence[dict[str, Any]]) -> str:
    return (f"stage {ctx.stage!r} ({options.get('method', '?')}), {split}, "
            f"{len(records)} records")


# -- preference records as TRL tokenizes them ---------------------------------------------------


def preference_examples(tokenizer: Any, records: Sequence[dict[str, Any]], answers: tuple[str, ...],
                        max_length: int, mode: TruncationMode = "keep_end"
                        ) -> list[TokenizedExample]:
    """Preference records tokenized as ftp's DPO and KTO trainers see them (conversational data).

    The prompt is rendered with the generation prompt, and prompt + answer as one
    conversation; the answer starts where the two renderings part (for every answer of the
    record). Loss is on the answer's tokens. A record longer than ``max_length`` is fitted by
    ``mode`` (`fit_pair`); one left without an answer token, or dropped, is marked dropped.
    """
    out = []
    for record in records:
        prompt = render(tokenizer, record["prompt"], generation_prompt=True)
        full = {name: render(tokenizer, record["prompt"] + record[name]) for name in answers}
        start = min(common_prefix(prompt, ids) for ids in full.values())
        example = TokenizedExample(length=max(len(ids) for ids in full.values()))
        fitted = fit_pair(full[answers[0]][:start], {n: ids[start:] for n, ids in full.items()},
                          max_length, mode)
        example.truncated = fitted.truncated
        example.dropped = not fitted.trainable
        for name, answer in fitted.answers.items():
            ids = list(fitted.prompt) + list(answer)
            labels = [IGNORE_INDEX] * len(fitted.prompt) + list(answer)
            example.sequences.append(TokenSequence(ids, labels, name))
        if "label" in record:
            example.label = "desirable" if record["label"] else "undesirable"
        out.append(example)
    return out
