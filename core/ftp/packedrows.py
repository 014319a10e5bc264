"""Records held compactly: each one pickled into one shared buffer, unpickled when read.

A formatted instruction row held as Python objects costs ~0.7 KB beyond its text (a dict, a
list of turn dicts, a string object per field); the same row pickled costs its text and a few
dozen bytes. `PackedRows` keeps a dataset's rows that way and reads like the list of dicts
methods and evaluators expect: ``len``, indexing (a fresh dict each time), slicing (a list),
iteration, ``+`` (concatenation, still packed) and `take` (a selection that shares the
buffer, as numpy's views do).

Rows are never written out: the buffer lives in this process (and in forked children, copy
on write). Reading a row gives a new copy, so changing it does not change the stored row.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

import numpy as np

_PROTOCOL = pickle.HIGHEST_PROTOCOL


class PackedRows(Sequence[dict[str, Any]]):
    """A sequence of records stored pickled in one ``bytearray``.

    Build one with `append` (or `of`); `take` gives a reordered view sharing the storage.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._ends: list[int] | np.ndarray = []  # end offset of each stored row
        self._order: np.ndarray | None = None  # which stored rows, in which order (a view)

    @classmethod
    def of(cls, rows: Iterable[dict[str, Any]]) -> PackedRows:
        """The rows, packed.

        Raises:
            pickle.PicklingError, TypeError, AttributeError: for a row that cannot be pickled.

        """
        out = cls()
        for row in rows:
            out.append(row)
        return out

    def append(self, row: dict[str, Any]) -> None:
        """Add a row at the end (only on a store built here, not on a `take` view)."""
        if self._order is not None:
            raise TypeError("cannot append to a view made by take()")
        data = pickle.dumps(row, _PROTOCOL)
        self._buf += data
        ends = self._ends
        if isinstance(ends, np.ndarray):
            ends = self._ends = ends.tolist()
        ends.append(len(self._buf))

    def _freeze(self) -> np.ndarray:
        # A Python list of ints costs ~36 bytes a row; int64 costs 8. Frozen at first read.
        if not isinstance(self._ends, np.ndarray):
            self._ends = np.asarray(self._ends, dtype=np.int64)
        return self._ends

    def _stored(self, position: int) -> dict[str, Any]:
        ends = self._freeze()
        start = int(ends[position - 1]) if position else 0
        # The view is released at once: a bytearray with a live view cannot grow.
        with memoryview(self._buf) as view:
            row: dict[str, Any] = pickle.loads(view[start:int(ends[position])])
        return row

    def __len__(self) -> int:
        return len(self._order) if self._order is not None else len(self._ends)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            # A list, as a list's slice is (callers serialise it, add lists to it); `take`
            # gives a view where the rows must stay packed.
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("PackedRows index out of range")
        return self._stored(int(self._order[index]) if self._order is not None else index)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))

    def take(self, indices: Sequence[int] | range) -> PackedRows:
        """The rows at ``indices``, in that order, sharing this store's buffer."""
        picked = np.arange(indices.start, indices.stop, indices.step, dtype=np.int64) \
            if isinstance(indices, range) else np.asarray(indices, dtype=np.int64)
        return _shared(self, self._positions()[picked])

    def __add__(self, other: Iterable[dict[str, Any]]) -> PackedRows:
        if isinstance(other, PackedRows) and other._buf is self._buf:
            # Two selections of one store (a dataset's train and eval): no copying.
            return _shared(self, np.concatenate([self._positions(), other._positions()]))
        return PackedRows.of(_chain(self, other))

    def __radd__(self, other: Iterable[dict[str, Any]]) -> PackedRows:
        return PackedRows.of(_chain(other, self))

    def _positions(self) -> np.ndarray:
        return self._order if self._order is not None else np.arange(len(self), dtype=np.int64)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # mutable, like a list

    def __repr__(self) -> str:
        return f"PackedRows({len(self)} rows, {len(self._buf):,} bytes)"


def _shared(store: PackedRows, positions: np.ndarray) -> PackedRows:
    view = PackedRows()
    view._buf = store._buf
    view._ends = store._freeze()
    view._order = positions
    return view


def _chain(*parts: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for part in parts:
        yield from part
