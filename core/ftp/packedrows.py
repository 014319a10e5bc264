"""Records held compactly: each one pickled into a shared store, unpickled when read.

A formatted instruction row held as Python objects costs ~0.7 KB beyond its text (a dict, a
list of turn dicts, a string object per field); the same row pickled costs its text and a few
dozen bytes. `PackedRows` keeps a dataset's rows that way and reads like the list of dicts
methods and evaluators expect: ``len``, indexing (a fresh dict each time), slicing (a list),
iteration, ``+`` (concatenation, still packed) and `take` (a selection that shares the
store, as numpy's views do).

Even pickled, a million rows are ~0.8 GB, so the store holds at most `SPILL_BYTES` in memory
(``FTP_PACKED_SPILL_BYTES`` overrides it): past that the bytes go to an anonymous temporary
file (made in `tempfile.gettempdir`, unlinked at once, so a killed run leaves nothing behind)
and are read back with ``os.pread``. Not ``mmap``: mapped pages count in the process's
resident memory, and hashing and tokenizing read every row. ``pread`` names its own offset,
so children forked to tokenize read the same file safely. The file is closed when the store
and all its views are gone. Reading a row gives a new copy, so changing it does not change
the stored row.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

import numpy as np

from ftp.errors import UserError

_PROTOCOL = pickle.HIGHEST_PROTOCOL

#: The most pickled bytes a store keeps in memory before it spills them to its file.
SPILL_BYTES = 32 << 20
#: Rows read in order come from one ``pread`` of up to this many bytes.
_BLOCK_BYTES = 1 << 20


def spill_bytes() -> int:
    """`SPILL_BYTES`, or ``FTP_PACKED_SPILL_BYTES`` when set (tests set it tiny).

    Raises:
        UserError: when the variable is not a whole number of bytes.

    """
    value = os.environ.get("FTP_PACKED_SPILL_BYTES", "").strip()
    if not value:
        return SPILL_BYTES
    try:
        limit = int(value)
    except ValueError:
        limit = -1
    if limit < 0:
        raise UserError(f"FTP_PACKED_SPILL_BYTES={value!r}: expected a number of bytes (>= 0)")
    return limit


class _Store:
    """Pickled rows end to end: the older bytes in a temporary file, the newest in memory.

    Offsets count from the first row's first byte, wherever the bytes now are; ``ends[i]`` is
    where row ``i`` ends.
    """

    def __init__(self) -> None:
        self.file: Any = None  # the unbuffered temporary file, once something spilled
        self.limit = spill_bytes()
        self.ends = array("q")  # 8 bytes a row (a list of ints costs ~36)
        self.mem = bytearray()  # bytes not yet in the file: those from `filed` on
        self.filed = 0

    @property
    def size(self) -> int:
        return self.filed + len(self.mem)

    def add(self, data: bytes) -> None:
        if len(self.mem) + len(data) > self.limit:
            self._spill(self.mem)
            # A new buffer: readers may hold a view of the old one.
            self.mem = bytearray()
            if len(data) > self.limit:
                self._spill(data)
                data = b""
        self.mem += data
        self.ends.append(self.size)

    def _spill(self, data: bytes | bytearray) -> None:
        if not data:
            return
        if self.file is None:
            # Unlinked as it is made (where the OS allows): nothing outlives the process.
            # Held open for the store's life, closed in `__del__`: no ``with`` fits that.
            self.file = tempfile.TemporaryFile(buffering=0)  # noqa: SIM115
        view = memoryview(data)
        written = 0
        while written < len(view):
            written += os.pwrite(self.file.fileno(), view[written:], self.filed + written)
        self.filed += written

    def read(self, start: int, stop: int) -> bytes | memoryview:
        """Bytes ``start:stop`` of the stored rows."""
        filed = self.filed
        if start >= filed:
            return memoryview(self.mem)[start - filed:stop - filed]
        head = self._pread(start, min(stop, filed))
        if stop <= filed:
            return head
        return head + bytes(self.mem[:stop - filed])

    def _pread(self, start: int, stop: int) -> bytes:
        fd = self.file.fileno()
        chunks = []
        while start < stop:
            chunk = os.pread(fd, stop - start, start)
            if not chunk:
                raise OSError(f"packed rows' spill file ends at {start}, {stop} expected")
            chunks.append(chunk)
            start += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def row(self, position: int) -> dict[str, Any]:
        start = self.ends[position - 1] if position else 0
        data = self.read(start, self.ends[position])
        try:
            row: dict[str, Any] = pickle.loads(data)
        finally:
            if isinstance(data, memoryview):
                data.release()  # a bytearray with a live view cannot grow
        return row

    def rows(self, positions: np.ndarray) -> Iterator[dict[str, Any]]:
        """The rows at ``positions``, in order; a run of consecutive ones read at once."""
        ends = self.ends
        for low in range(0, len(positions), 4096):
            chunk = positions[low:low + 4096].tolist()  # Python ints: fast to compare
            i, n = 0, len(chunk)
            while i < n:
                first = chunk[i]
                start = ends[first - 1] if first else 0
                # The run of consecutive positions from ``first``, up to a block's bytes.
                j = i + 1
                while j < n and chunk[j] == chunk[j - 1] + 1 and \
                        ends[chunk[j]] - start <= _BLOCK_BYTES:
                    j += 1
                if j == i + 1:
                    yield self.row(first)
                else:
                    block = memoryview(bytes(self.read(start, ends[chunk[j - 1]])))
                    at = 0
                    for position in chunk[i:j]:
                        end = ends[position] - start
                        yield pickle.loads(block[at:end])
                        at = end
                i = j

    def __del__(self) -> None:
        if self.file is not None:
            self.file.close()


class PackedRows(Sequence[dict[str, Any]]):
    """A sequence of records stored pickled, in memory up to `SPILL_BYTES`, then in a file.

    Build one with `append` (or `of`); `take` gives a reordered view sharing the storage.
    """

    def __init__(self) -> None:
        self._store = _Store()
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
        self._store.add(pickle.dumps(row, _PROTOCOL))

    def __len__(self) -> int:
        return len(self._order) if self._order is not None else len(self._store.ends)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            # A list, as a list's slice is (callers serialise it, add lists to it); `take`
            # gives a view where the rows must stay packed.
            return list(self._store.rows(self._positions()[index]))
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("PackedRows index out of range")
        return self._store.row(int(self._order[index]) if self._order is not None else index)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._store.rows(self._positions())

    def take(self, indices: Sequence[int] | range) -> PackedRows:
        """The rows at ``indices``, in that order, sharing this store's storage."""
        picked = np.arange(indices.start, indices.stop, indices.step, dtype=np.int64) \
            if isinstance(indices, range) else np.asarray(indices, dtype=np.int64)
        return _shared(self, self._positions()[picked])

    def __add__(self, other: Iterable[dict[str, Any]]) -> PackedRows:
        if isinstance(other, PackedRows) and other._store is self._store:
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

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled (another process, copy.deepcopy): the rows themselves, packed again on the
        # other side; a spill file's descriptor means nothing there.
        return (PackedRows.of, (list(self),))

    def __repr__(self) -> str:
        store = self._store
        where = f", {store.filed:,} in a file" if store.filed else ""
        return f"PackedRows({len(self)} rows, {store.size:,} bytes{where})"


def _shared(store: PackedRows, positions: np.ndarray) -> PackedRows:
    view = PackedRows.__new__(PackedRows)
    view._store = store._store
    view._order = positions
    return view


def _chain(*parts: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for part in parts:
        yield from part
