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


class TokenRows(Sequence[dict[str, Any]]):
    """Rows with the same columns: sequences of ints (``input_ids``...) or single ints.

    Args:
        rows: Rows to start with (dicts of int lists or ints, every row with the same keys).

    """

    def __init__(self, rows: Iterable[Mapping[str, Any]] = ()) -> None:
        self._values: dict[str, array[int]] = {}
        #: Per sequence column, where each row starts (one more entry than rows); None for a
        #: column of single ints.
        self._offsets: dict[str, array[int] | None] = {}
        self._rows = 0
        for row in rows:
            self.append(row)

    @classmethod
    def of(cls, rows: Iterable[Mapping[str, Any]]) -> TokenRows:
        """``rows`` itself when it is a `TokenRows`, else its rows copied into one."""
        return rows if isinstance(rows, TokenRows) else cls(rows)

    @classmethod
    def from_arrays(cls, rows: int, values: dict[str, array[int]],
                    lengths: Mapping[str, Sequence[int] | None]) -> TokenRows:
        """Rows from whole columns: each column's values, and per row its length (None: ints).

        Raises:
            ValueError: when a column's lengths do not match ``rows`` or its values.

        """
        out = cls()
        out._rows = rows
        for name, column in values.items():
            sizes = lengths.get(name)
            if column.typecode != VALUE_CODE:
                raise ValueError(f"column {name!r}: values must be array({VALUE_CODE!r})")
            if sizes is None:
                if len(column) != rows:
                    raise ValueError(f"column {name!r} has {len(column)} values for {rows} rows")
                out._offsets[name] = None
            else:
                if len(sizes) != rows:
                    raise ValueError(f"column {name!r} has {len(sizes)} lengths for {rows} rows")
                offsets = array(OFFSET_CODE, [0])
                offsets.extend(accumulate(sizes))
                if offsets[-1] != len(column):
                    raise ValueError(f"column {name!r}: the lengths add up to {offsets[-1]}, "
                                     f"not to its {len(column)} values")
                out._offsets[name] = offsets
            out._values[name] = column
        return out

    # -- building --------------------------------------------------------------------------

    def append(self, row: Mapping[str, Any]) -> None:
        """Add one row; the first row decides the columns and which hold single ints.

        Raises:
            ValueError: when the row's keys differ from the first row's.

        """
        if not self._values and not self._rows:
            for name, value in row.items():
                self._values[name] = array(VALUE_CODE)
                self._offsets[name] = None if isinstance(value, int) else array(OFFSET_CODE, [0])
        if row.keys() != self._values.keys():
            raise ValueError(f"row keys {sorted(row)} differ from the first row's "
                             f"{sorted(self._values)}")
        for name, column in self._values.items():
            offsets = self._offsets[name]
            if offsets is None:
                column.append(row[name])
            else:
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
        if not self._rows:
            for name, column in rows._values.items():
                self._values[name] = array(VALUE_CODE, column)
                offsets = rows._offsets[name]
                self._offsets[name] = None if offsets is None else array(OFFSET_CODE, offsets)
            self._rows = rows._rows
            return
        if rows._values.keys() != self._values.keys():
            raise ValueError(f"columns {sorted(rows._values)} differ from {sorted(self._values)}")
        for name, column in self._values.items():
            theirs, their_offsets = rows._values[name], rows._offsets[name]
            offsets = self._offsets[name]
            if (offsets is None) != (their_offsets is None):
                raise ValueError(f"column {name!r} holds ints in one part and lists in the other")
            if offsets is not None and their_offsets is not None:
                base = len(column)
                offsets.extend(base + end for end in their_offsets[1:])
            column.extend(theirs)
        self._rows += rows._rows

    # -- reading ---------------------------------------------------------------------------

    @property
    def columns(self) -> list[str]:
        """The column names, in the first row's order."""
        return list(self._values)

    def is_sequence(self, name: str) -> bool:
        """Whether column ``name`` holds a list per row (not a single int)."""
        return self._offsets[name] is not None

    def values(self, name: str) -> array[int]:
        """Column ``name``'s values, every row end to end (not a copy: do not change it)."""
        return self._values[name]

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
        single-int columns ``int32``; a row read from it is the same dict of lists.
        """
        import numpy as np
        import pyarrow as pa
        from datasets import Dataset
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
        return Dataset(InMemoryTable(pa.table(columns)))
