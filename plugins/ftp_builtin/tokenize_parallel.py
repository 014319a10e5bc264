"""`tokenize_records` in several forked processes, for data sets with many rows per core.

Rendering a chat template and finding its loss masks is pure Python per row, so a million
rows take one core minutes. Above `ROWS_PER_PROCESS` rows per core the records are cut into
one contiguous part per core, each tokenized in a forked child (which inherits the records
and the tokenizer: nothing is sent to it), and the parts are joined in order. The result is
the one process's, token for token and count for count: rows in the same order, the same
counts and repairs, and the same rows named (by their index in the whole list) when some have
nothing to learn from.

Forking is used only where the platform offers it (Linux, not macOS' default or Windows); a
child inherits a copy of the parent's memory, so nothing here suits a process that holds
threads in the middle of work — tokenization runs before training starts.
``FTP_TOKENIZE_ROWS_PER_PROCESS`` sets the threshold (tests set it low to exercise the path).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Sequence
from typing import Any

from ftp.packedrows import PackedRows
from ftp_builtin.tokenize import Tokenized, expects_bos, refuse_empty, tokenize_records

ROWS_PER_PROCESS = 20_000
"""Below this many rows per core, one process: forking and joining would cost more."""

# The job the forked children read: set just before the pool forks, cleared after.
_JOB: tuple[Any, Sequence[dict[str, Any]], int | None, bool, bool] | None = None


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


def tokenize_in_processes(tokenizer: Any, records: Sequence[dict[str, Any]],
                          max_length: int | None, assistant_only: bool = True, *,
                          skip_empty: bool = False) -> Tokenized:
    """`tokenize_records`, with the same arguments and result, in several processes if it pays.

    Raises:
        UserError: as `tokenize_records` does, naming the same rows.

    """
    n = processes_for(len(records))
    if n == 1:
        return tokenize_records(tokenizer, records, max_length, assistant_only,
                                skip_empty=skip_empty)
    bounds = [len(records) * i // n for i in range(n + 1)]
    global _JOB
    _JOB = (tokenizer, records, max_length, assistant_only, expects_bos(tokenizer, records))
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
    out = join(parts, bounds, max_length)
    if out.empty and not skip_empty:
        refuse_empty(out.empty, len(records))
    return out


def _child_signals() -> None:
    """In a child: the default signal handlers, not the run's (which checkpoint and report).

    The pool ends its children with SIGTERM once their work is joined; a child must then just
    end. An interrupt is the parent's to handle.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _part(span: tuple[int, int]) -> Tokenized:
    """In a child: tokenize ``records[start:stop]`` (rows with nothing to learn kept aside)."""
    assert _JOB is not None, "set by the parent before forking"
    tokenizer, records, max_length, assistant_only, bos = _JOB
    start, stop = span
    # Packed rows stay packed (a view): the child's share is not unpacked whole at once.
    share = records.take(range(start, stop)) if isinstance(records, PackedRows) \
        else records[start:stop]
    return tokenize_records(tokenizer, share, max_length, assistant_only,
                            skip_empty=True, bos_expected=bos)


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
