"""`tokenize_records` into files, in several forked processes for data sets with many rows.

Rendering a chat template and finding its loss masks is pure Python per row, so a million
rows take one core minutes. Above `ROWS_PER_PROCESS` rows per core the records are cut into
one contiguous part per core, each tokenized in a forked child (which inherits the records
and the tokenizer: nothing is sent to it), and the parts are joined in order. The result is
the one process's, token for token and count for count: rows in the same order, the same
counts and repairs, and the same rows named (by their index in the whole list) when some have
nothing to learn from.

`tokenize_into` writes the rows into a `ftp.cache.RowsWriter` (a cache entry's folder),
`CHUNK_ROWS` rows at a time in each process: the tokens go to files as they are made, so no
process ever holds more than a chunk's, however many rows there are.

Forking is used only where the platform offers it (Linux, not macOS' default or Windows); a
child inherits a copy of the parent's memory, so nothing here suits a process that holds
threads in the middle of work — tokenization runs before training starts.
``FTP_TOKENIZE_ROWS_PER_PROCESS`` sets the threshold (tests set it low to exercise the path).
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ftp.cache import RowsWriter
from ftp.packedrows import PackedRows
from ftp.tokenrows import TokenRows
from ftp_builtin.tokenize import Tokenized, expects_bos, tokenize_records

ROWS_PER_PROCESS = 20_000
"""Below this many rows per core, one process: forking and joining would cost more."""

CHUNK_ROWS = 8192
"""Rows tokenized at a time by `tokenize_into` before their tokens are written out."""

# The job the forked children read: set just before the pool forks, cleared after. The last
# item is the folder the children write their parts into.
_JOB: tuple[Any, Sequence[dict[str, Any]], int | None, bool, bool, Path] | None = None


def rows_per_process() -> int:
    """The threshold: ``FTP_TOKENIZE_ROWS_PER_PROCESS``, else `ROWS_PER_PROCESS`."""
    value = os.environ.get("FTP_TOKENIZE_ROWS_PER_PROCESS", "")
    return int(value) if value.strip().isdigit() and int(value) > 0 else ROWS_PER_PROCESS


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def processes_for(rows: int) -> int:
    """How many processes tokenize ``rows`` rows: one per core, each with enough rows."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, min(cores(), rows // rows_per_process()))


def tokenize_into(writer: RowsWriter, tokenizer: Any, records: Sequence[dict[str, Any]],
                  max_length: int | None, assistant_only: bool = True) -> Tokenized:
    """`tokenize_records` with ``skip_empty``, its rows written to ``writer``, not returned.

    The rows written are the ones `tokenize_records` returns, in the same order; the result
    holds the same counts and ``empty`` rows (indexed in the whole list), and no rows. Each
    process tokenizes `CHUNK_ROWS` rows at a time and writes them out before the next; several
    processes write parts of their own (in ``writer``'s folder), then appended in order.
    """
    n = processes_for(len(records))
    if n == 1:
        return _chunks_into(writer, tokenizer, records, 0, len(records), max_length,
                            assistant_only, expects_bos(tokenizer, records))
    return _in_processes(n, tokenizer, records, max_length, assistant_only, writer)


def _in_processes(n: int, tokenizer: Any, records: Sequence[dict[str, Any]],
                  max_length: int | None, assistant_only: bool,
                  writer: RowsWriter) -> Tokenized:
    """Tokenize ``records`` in ``n`` forked processes; their parts joined in order."""
    bounds = [len(records) * i // n for i in range(n + 1)]
    global _JOB
    _JOB = (tokenizer, records, max_length, assistant_only, expects_bos(tokenizer, records),
            writer.folder)
    # The Rust tokenizers' own thread pool must not be used in a forked child (it would
    # deadlock); saying so before the fork keeps it off there without their warning.
    configured = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        with multiprocessing.get_context("fork").Pool(n, initializer=_child_signals) as pool:
            if configured is None:  # the parent goes on as it was
                del os.environ["TOKENIZERS_PARALLELISM"]
            parts = pool.map(_part, list(zip(bounds, bounds[1:], strict=False)))
    finally:
        _JOB = None
        if configured is not None:
            os.environ["TOKENIZERS_PARALLELISM"] = configured
        else:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
    for start in bounds[:-1]:
        part = _part_folder(writer.folder, start)
        writer.add_folder(part)
        shutil.rmtree(part)
    return join(parts, bounds, max_length)


def _chunks_into(writer: RowsWriter, tokenizer: Any, records: Sequence[dict[str, Any]],
                 start: int, stop: int, max_length: int | None, assistant_only: bool,
                 bos: bool) -> Tokenized:
    """Tokenize ``records[start:stop]`` `CHUNK_ROWS` at a time into ``writer`` (no rows kept).

    Row indices in the result's ``empty`` count from ``start``'s row as 0.
    """
    starts = list(range(start, stop, CHUNK_ROWS))
    parts = []
    for first in starts:
        last = min(first + CHUNK_ROWS, stop)
        # Packed rows stay packed (a view): a chunk is unpacked one row at a time.
        share = records.take(range(first, last)) if isinstance(records, PackedRows) \
            else records[first:last]
        part = tokenize_records(tokenizer, share, max_length, assistant_only,
                                skip_empty=True, bos_expected=bos)
        writer.add(part.rows)
        part.rows = TokenRows()
        parts.append(part)
    return join(parts, [s - start for s in starts], max_length)


def _part_folder(folder: Path, start: int) -> Path:
    return folder / f"part-{start}"


def _child_signals() -> None:
    """In a child: the default signal handlers, not the run's (which checkpoint and report).

    The pool ends its children with SIGTERM once their work is joined; a child must then just
    end. An interrupt is the parent's to handle.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _part(span: tuple[int, int]) -> Tokenized:
    """In a child: tokenize ``records[start:stop]`` into a part folder of its own, by chunks.

    Rows with nothing to learn from are kept aside; the result holds only the counts.
    """
    assert _JOB is not None, "set by the parent before forking"
    tokenizer, records, max_length, assistant_only, bos, folder = _JOB
    start, stop = span
    part = _part_folder(folder, start)
    part.mkdir()
    writer = RowsWriter(part)
    out = _chunks_into(writer, tokenizer, records, start, stop, max_length, assistant_only, bos)
    writer.close()
    return out


def join(parts: list[Tokenized], starts: list[int], max_length: int | None) -> Tokenized:
    """Join parts tokenized separately, in order; ``starts[i]`` is part i's first row index."""
    out = Tokenized(max_length=max_length)
    for index, start in enumerate(starts[:len(parts)]):
        part = parts[index]
        # Each part's arrays are let go once copied: the tokens are held about once, not twice.
        parts[index] = Tokenized()
        if index == 0:
            out.rows = part.rows  # the first part's arrays are the start of the whole
        else:
            out.rows.extend(part.rows)
        out.truncated += part.truncated
        out.tokens += part.tokens
        out.loss_tokens += part.loss_tokens
        out.examples += part.examples
        out.longest = max(out.longest, part.longest)
        for key, count in part.fixes.items():
            out.fixes[key] = out.fixes.get(key, 0) + count
        out.empty.extend((start + i, why) for i, why in part.empty)
    out.dropped = len(out.empty)
    return out
