"""Rows of token ids held as flat int32 arrays, not as Python lists of ints.

A Python list of ints costs about 36 bytes a token (an 8-byte pointer and, above 256, a
28-byte int object); a million tokenized rows of a few hundred tokens would need tens of
gigabytes that way. `TokenRows` keeps each column end to end in one ``array('i')`` (4 bytes a
token) with the row boundaries beside it, so memory grows with the tokens alone, not with a
Python object per token. It is what tokenization produces, what the tokenized-data cache
writes and reads (``ftp.cache.save_rows``: the same bytes as before), and what
`TokenRows.dataset` hands to a trainer as Arrow columns without one Python int per token.

A row read back (``rows[i]``) is a dict of plain lists (and ints for whole-row columns), as
the list of dicts it replaces gave, so code that reads rows one at a time is unchanged.

Columns may also be read-only views of a file mapped into memory (``ftp.cache.load_rows``
maps a cache entry): then the tokens cost no memory of their own — the kernel pages in what a
batch reads and may drop it again — so a million-row dataset trains in the memory of a small
one. Such rows are copied into arrays of their own the first time they are added to.

Only the standard library is imported here; numpy, pyarrow and datasets only in `dataset`.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import accumulate
from typing import Any, overload

#: A token-id column: one int32 value per token, all rows end to end.
VALUE_CODE = "i"
#: Row boundaries: 64-bit, so a column may hold more than 2**31 tokens.
OFFSET_CODE = "q"


#: A column: an int array of our own, or a read-only view (a memoryview of a mapped file).
Column = array | memoryview


class TokenRows(Sequence[dict[str, Any]]):
    """Rows with the same columns: sequences of ints (``input_ids``...) or single ints.

    Args:
        rows: Rows to start with (dicts of int lists or ints, every row with the same keys).

    """

    def __init__(self, rows: Iterable[Mapping[str, Any]] = ()) -> None:
        self._values: dict[str, Column] = {}
        #: Per sequence column, where each row starts (one more entry than rows); None for a
        #: column of single ints.
        self._offsets: dict[str, Column | None] = {}
        self._rows = 0
        #: Whether some column is a read-only view (see `mapped`); checked before adding rows.
        self._views = False
        for row in rows:
            self.append(row)

    @classmethod
    def of(cls, rows: Iterable[Mapping[str, Any]]) -> TokenRows:
        """``rows`` itself when it is a `TokenRows`, else its rows copied into one."""
        return rows if isinstance(rows, TokenRows) else cls(rows)

    @classmethod
    def from_arrays(cls, rows: int, values: Mapping[str, Column],
                    lengths: Mapping[str, Sequence[int] | None]) -> TokenRows:
        """Rows from whole columns: each column's values, and per row its length (None: ints).

        Raises:
            ValueError: when a column's lengths do not match ``rows`` or its values.

        """
        offsets: dict[str, Column | None] = {}
        for name, sizes in lengths.items():
            if sizes is None:
                offsets[name] = None
                continue
            if len(sizes) != rows:
                raise ValueError(f"column {name!r} has {len(sizes)} lengths for {rows} rows")
            ends = array(OFFSET_CODE, [0])
            ends.extend(accumulate(sizes))
            offsets[name] = ends
        return cls.from_offsets(rows, values, offsets)

    @classmethod
    def from_offsets(cls, rows: int, values: Mapping[str, Column],
                     offsets: Mapping[str, Column | None]) -> TokenRows:
        """Rows from whole columns: each column's values and row starts (None: single ints).

        Columns are int32 (``array('i')`` or a memoryview of format ``i``), row starts int64
        with one more entry than rows; views are kept as they are (not copied).

        Raises:
            ValueError: when a column's shape or type does not fit ``rows``.

        """
        out = cls()
        out._rows = rows
        for name, column in values.items():
            ends = offsets.get(name)
            if _code(column) != VALUE_CODE:
                raise ValueError(f"column {name!r}: values must be int32 ({VALUE_CODE!r})")
            if ends is None:
                if len(column) != rows:
                    raise ValueError(f"column {name!r} has {len(column)} values for {rows} rows")
            else:
                if _code(ends) != OFFSET_CODE or len(ends) != rows + 1:
                    raise ValueError(f"column {name!r} has {len(ends) - 1} row starts for "
                                     f"{rows} rows")
                if ends[0] != 0 or ends[-1] != len(column):
                    raise ValueError(f"column {name!r}: the lengths add up to "
                                     f"{ends[-1] - ends[0]}, not to its {len(column)} values")
            out._values[name] = column
            out._offsets[name] = ends
            out._views |= isinstance(column, memoryview) or isinstance(ends, memoryview)
        return out

    @property
    def mapped(self) -> bool:
        """Whether some column is a read-only view (of a mapped file), not an array of ours."""
        return self._views

    # -- building --------------------------------------------------------------------------

    def append(self, row: Mapping[str, Any]) -> None:
        """Add one row; the first row decides the columns and which hold single ints.

        Raises:
            ValueError: when the row's keys differ from the first row's.

        """
        self._own()
        if not self._values and not self._rows:
            for name, value in row.items():
                self._values[name] = array(VALUE_CODE)
                self._offsets[name] = None if isinstance(value, int) else array(OFFSET_CODE, [0])
        if row.keys() != self._values.keys():
            raise ValueError(f"row keys {sorted(row)} differ from the first row's "
                             f"{sorted(self._values)}")
        for name, column in self._values.items():
            offsets = self._offsets[name]
            assert isinstance(column, array)  # made so by _own
            if offsets is None:
                column.append(row[name])
            else:
                assert isinstance(offsets, array)
                column.extend(row[name])
                offsets.append(len(column))
        self._rows += 1

    def extend(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Add rows; another `TokenRows` is joined column by column, without reading its rows."""
        if not isinstance(rows, TokenRows):
            for row in rows:
                self.append(row)
            return
        if not rows._rows:
            return
        self._own()
        if not self._rows:
            for name, column in rows._values.items():
                self._values[name] = _array(VALUE_CODE, column)
                offsets = rows._offsets[name]
                self._offsets[name] = None if offsets is None else _array(OFFSET_CODE, offsets)
            self._rows = rows._rows
            return
        if rows._values.keys() != self._values.keys():
            raise ValueError(f"columns {sorted(rows._values)} differ from {sorted(self._values)}")
        for name, column in self._values.items():
            theirs, their_offsets = rows._values[name], rows._offsets[name]
            offsets = self._offsets[name]
            if (offsets is None) != (their_offsets is None):
                raise ValueError(f"column {name!r} holds ints in one part and lists in the other")
            assert isinstance(column, array)  # made so by _own
            if offsets is not None and their_offsets is not None:
                assert isinstance(offsets, array)
                base = len(column)
                offsets.extend(base + end for end in their_offsets[1:])
            column.frombytes(memoryview(theirs).cast("B"))
        self._rows += rows._rows

    def _own(self) -> None:
        """Copy read-only (mapped) columns into arrays of our own, before adding rows."""
        if not self._views:
            return
        self._views = False
        for name, column in self._values.items():
            if isinstance(column, memoryview):
                self._values[name] = _array(VALUE_CODE, column)
            offsets = self._offsets[name]
            if isinstance(offsets, memoryview):
                self._offsets[name] = _array(OFFSET_CODE, offsets)

    # -- reading ---------------------------------------------------------------------------

    @property
    def columns(self) -> list[str]:
        """The column names, in the first row's order."""
        return list(self._values)

    def is_sequence(self, name: str) -> bool:
        """Whether column ``name`` holds a list per row (not a single int)."""
        return self._offsets[name] is not None

    def values(self, name: str) -> Column:
        """Column ``name``'s values, every row end to end (not a copy: do not change it)."""
        return self._values[name]

    def offsets(self, name: str) -> Column:
        """Where each row of sequence column ``name`` starts, and the end (not a copy)."""
        offsets = self._offsets[name]
        if offsets is None:
            raise ValueError(f"column {name!r} holds one int per row, not a sequence")
        return offsets

    def lengths(self, name: str) -> list[int]:
        """Each row's length in sequence column ``name``."""
        offsets = self._offsets[name]
        if offsets is None:
            raise ValueError(f"column {name!r} holds one int per row, not a sequence")
        return [b - a for a, b in zip(offsets, offsets[1:], strict=False)]

    def __len__(self) -> int:
        return self._rows

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._rows))]
        if index < 0:
            index += self._rows
        if not 0 <= index < self._rows:
            raise IndexError("row index out of range")
        row: dict[str, Any] = {}
        for name, column in self._values.items():
            offsets = self._offsets[name]
            if offsets is None:
                row[name] = column[index]
            else:
                row[name] = column[offsets[index]:offsets[index + 1]].tolist()
        return row

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(self._rows):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TokenRows):
            # An array equals a memoryview of the same ints: mapped rows equal computed ones.
            return (self._rows == other._rows and self._values == other._values
                    and self._offsets == other._offsets)
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(other) == self._rows and all(a == b for a, b in zip(self, other,
                                                                            strict=False))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like the list it replaces

    def __repr__(self) -> str:
        tokens = sum(len(v) for v in self._values.values())
        return f"TokenRows({self._rows} rows, columns {self.columns}, {tokens} values)"

    # -- handing over ----------------------------------------------------------------------

    def dataset(self) -> Any:
        """The rows as a ``datasets.Dataset`` of Arrow columns, with no Python int per token.

        Sequence columns become ``list<int32>`` (``list<int64>`` offsets past 2**31 values),
        single-int columns ``int32``; a row read from it is the same dict of lists. Mapped
        columns stay mapped: Arrow reads the file's pages, nothing is copied.
        """
        import numpy as np
        import pyarrow as pa
        from datasets import Dataset
        from datasets.fingerprint import generate_random_fingerprint
        from datasets.table import InMemoryTable

        columns = {}
        for name, column in self._values.items():
            # Zero-copy views: Arrow keeps the numpy arrays, which keep the int arrays, alive.
            values = pa.array(np.frombuffer(column, dtype=np.int32), type=pa.int32())
            offsets = self._offsets[name]
            if offsets is None:
                columns[name] = values
                continue
            ends = np.frombuffer(offsets, dtype=np.int64)
            if ends[-1] < 2**31:
                columns[name] = pa.ListArray.from_arrays(pa.array(ends.astype(np.int32)), values)
            else:
                columns[name] = pa.LargeListArray.from_arrays(pa.array(ends), values)
        # A fingerprint of our own: without one, `Dataset` hashes the table by pickling it
        # whole — a second copy of every token, briefly, measured at +400 MB for 100k rows.
        # Nothing caches by it (the table is in memory, not in files datasets would reuse).
        return Dataset(InMemoryTable(pa.table(columns)),
                       fingerprint=generate_random_fingerprint())


def _code(column: Column) -> str:
    """The element type of a column: an array's typecode, a memoryview's format."""
    return column.typecode if isinstance(column, array) else column.format


def _array(code: str, column: Column) -> array[int]:
    """An array of our own holding ``column``'s ints (a bytes copy, no Python int each)."""
    out = array(code)
    out.frombytes(memoryview(column).cast("B"))
    return out
