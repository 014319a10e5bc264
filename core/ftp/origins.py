"""Where each row came from, held compactly: ~12 bytes a row instead of a ~110-byte string.

Loaders name a row's place ``/abs/path/rows.jsonl:123`` or ``/abs/path/rows.json[7]``, and
ftp names rows a loader did not place ``data.NAME row 5``: a text shared by many rows and a
number. `Origins` keeps each distinct text once, in a table, and per row the table's index
and the number, in two arrays; any other string is kept as it is. It reads back the very
strings it was given: ``len``, indexing, slicing (a list), iteration, equality, `take`.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import overload

import numpy as np

# A text, then a number written as ``str(int)`` writes it (no leading zero, so it reads back
# the same; at most 18 digits, to fit 64 bits), then nothing or ``]``.
_SHAPE = re.compile(r"(.*?)(0|[1-9][0-9]{0,17})(\]?)\Z", re.DOTALL)
_OTHER = -1  # the row's string is kept whole, in `_others`
# Texts are a file's or a dataset's, a few per dataset: a loader naming each row differently
# (``id-<uuid>-1``) would only fill the table, so past this many, new ones are kept whole.
_MOST_TEXTS = 4096


class Origins(Sequence[str]):
    """A sequence of origin strings stored as (text, number) pairs where they have that shape.

    Build one with `append` (or `of`); `take` gives a new one with the rows picked.
    """

    def __init__(self) -> None:
        self._texts: list[tuple[str, str]] = []  # (before the number, after it)
        self._index: dict[tuple[str, str], int] = {}
        self._which = array("i")  # each row's index into `_texts`, or _OTHER
        self._numbers = array("q")  # each row's number, or its index into `_others`
        self._others: list[str] = []

    @classmethod
    def of(cls, origins: Iterable[str]) -> Origins:
        """The strings, held compactly."""
        out = cls()
        for origin in origins:
            out.append(origin)
        return out

    def append(self, origin: str) -> None:
        """Add one row's origin at the end."""
        found = _SHAPE.match(origin)
        key = (found.group(1), found.group(3)) if found is not None else None
        which = self._index.get(key) if key is not None else None
        if which is None and key is not None and len(self._texts) < _MOST_TEXTS:
            which = self._index[key] = len(self._texts)
            self._texts.append(key)
        if which is None or found is None:
            self._which.append(_OTHER)
            self._numbers.append(len(self._others))
            self._others.append(origin)
            return
        self._which.append(which)
        self._numbers.append(int(found.group(2)))

    def __len__(self) -> int:
        return len(self._which)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        which = self._which[index]  # IndexError (and negative indices) as a list's
        number = self._numbers[index]
        if which == _OTHER:
            return self._others[number]
        before, after = self._texts[which]
        return f"{before}{number}{after}"

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    def take(self, indices: Sequence[int] | array | np.ndarray) -> Origins:
        """The origins at ``indices``, in that order, as a new `Origins`."""
        picked = np.asarray(indices, dtype=np.int64)
        out = Origins()
        out._texts = self._texts  # never changed once made, only added to: safe to share
        out._index = self._index
        which = np.asarray(self._which, dtype=np.int32)[picked]  # IndexError as numpy's
        numbers = np.asarray(self._numbers, dtype=np.int64)[picked]
        others = which == _OTHER
        if others.any():
            # Strings kept whole move to the new table, renumbered.
            out._others = [self._others[int(k)] for k in numbers[others]]
            numbers[others] = np.arange(len(out._others), dtype=np.int64)
        out._which.frombytes(which.astype(np.int32).tobytes())
        out._numbers.frombytes(numbers.astype(np.int64).tobytes())
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # mutable, like a list

    def __repr__(self) -> str:
        return f"Origins({len(self)} rows, {len(self._texts)} texts, {len(self._others)} other)"
