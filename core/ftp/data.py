"""Preparing a dataset: load, fill placeholders, format, split — the same for every plugin."""

from __future__ import annotations

import pickle
import random
import re
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftp.components import DataLoader, Format
from ftp.config import Dataset
from ftp.contexts import LoadContext
from ftp.errors import FtpError, RunError, UserError
from ftp.hashing import digest, file_digest
from ftp.origins import Origins
from ftp.packedrows import PackedRows

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


@dataclass
class Prepared:
    """A dataset ready for methods and evaluators.

    Attributes:
        name: The dataset's name (or, for a stage's mixture, a label such as ``a+b``).
        shape: The record shape its format produces.
        train: Training records: a list of dicts, or (from `prepare`) the same rows held
            compactly as `ftp.packedrows.PackedRows`, read like a list.
        eval: Held-out records, held the same way.
        fingerprint: What ``data.json`` records about it.
        warnings: Lines to show on the terminal.
        skipped: With ``on_bad_rows = "skip"``: how many rows were skipped, by reason.
        train_origins: Where each training record came from (``file:line``,
            ``file[index]``, or ``data.NAME row N`` when the loader did not say); from
            `prepare`, held compactly (`ftp.origins.Origins`), read like a list.
        eval_origins: The same for the held-out records.
        on_bad_rows: The dataset's bad-row policy, for rows a method finds unusable.

    """

    name: str
    shape: str
    train: Sequence[dict[str, Any]]
    eval: Sequence[dict[str, Any]]
    fingerprint: dict[str, Any]
    warnings: list[str]
    skipped: dict[str, int] = field(default_factory=dict)
    train_origins: Sequence[str] = field(default_factory=list)
    eval_origins: Sequence[str] = field(default_factory=list)
    on_bad_rows: str = "error"

    def split(self, which: str) -> Sequence[dict[str, Any]]:
        """``eval``, ``train`` or ``all`` records."""
        if which == "eval":
            return self.eval
        if which == "train":
            return self.train
        if isinstance(self.train, PackedRows):
            return self.train + self.eval
        return [*self.train, *self.eval]


def fill_placeholders(value: Any, values: dict[str, str], where: str) -> Any:
    """Replace ``{{key}}`` in every string of a record; an unknown key is a `UserError`."""
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            key = m.group(1)
            if key not in values:
                raise UserError(
                    f"{where}: placeholder {{{{{key}}}}} has no value; add {key} = \"...\" to "
                    "placeholders (defined: " + (", ".join(sorted(values)) or "none") + ")"
                )
            return values[key]

        return _PLACEHOLDER.sub(sub, value)
    if isinstance(value, list):
        return [fill_placeholders(v, values, where) for v in value]
    if isinstance(value, dict):
        return {k: fill_placeholders(v, values, where) for k, v in value.items()}
    return value


class Records(list):
    """A loader's records (a plain list of dicts), with what ftp learnt while loading them.

    Attributes:
        origins: For each record, where it came from (``file:line``, ``file[index]``), or None
            when the loader did not say.
        skipped: Rows the loader left out with ``on_bad_rows = "skip"``, by reason.
        files: The files the loader read through `LoadContext.expand`.
        eval_records: With ``eval_path``: the held-out file's records, loaded the same way.

    """

    def __init__(self, rows: list[dict[str, Any]], origins: list[str | None],
                 skipped: dict[str, int], files: list[Path]) -> None:
        super().__init__(rows)
        self.origins = origins
        self.skipped = skipped
        self.files = files
        self.eval_records: Records | None = None


class RecordStream:
    """A loader's records read as `prepare` formats them: one pass, never held whole.

    Iterating gives ``(record, origin)`` pairs from `DataLoader.rows`; the loader's context
    forgets each record as it is given, so once `prepare` has packed a formatted row nothing
    holds the raw one. `skipped` and `files` are complete once the pass has ended.

    The first record is read when the stream is made: a download, a missing file or an
    unreadable first row shows up where the loader runs, as with a list.

    Attributes:
        count: Records read so far (all of them once the pass has ended).
        eval_records: With ``eval_path``: the held-out file's records, streamed the same way.
        watchers: Called on each record as it is read, before it is formatted.

    """

    def __init__(self, ds: Dataset, loader: DataLoader, ctx: LoadContext, which: str,
                 blame: Callable[[Exception], Exception] | None = None) -> None:
        self._ds = ds
        self._blame = blame
        self._ctx = ctx
        self._which = which
        self._started = False
        self.count = 0
        self.eval_records: RecordStream | None = None
        #: Called on each record as it is read, before it is formatted (e.g. to count it).
        self.watchers: list[Callable[[dict[str, Any]], None]] = []
        self._rows = iter(loader.rows(ctx))
        self._first = self._next()

    @property
    def skipped(self) -> dict[str, int]:
        """Rows the loader left out with ``on_bad_rows = "skip"``, by reason."""
        return dict(self._ctx.skipped)

    @property
    def files(self) -> list[Path]:
        """The files the loader read through `LoadContext.expand`."""
        return list(self._ctx.files)

    def __iter__(self) -> Iterator[tuple[dict[str, Any], str | None]]:
        if self._started:
            raise RuntimeError("a RecordStream is read once")
        self._started = True
        record, self._first = self._first, None
        while record is not None:
            self.count += 1
            for watch in self.watchers:
                watch(record)
            yield record, self._ctx.pop_where(record)
            record = self._next()
        if not self.count:
            raise UserError(_no_rows(self._ds, self._which, self._ctx.skipped))

    def _next(self) -> dict[str, Any] | None:
        """The loader's next record, or None at the end."""
        try:
            return next(self._rows, None)
        except Exception as exc:
            if self._blame is not None:
                new = self._blame(exc)
                if new is exc:
                    raise
                raise new from exc
            if isinstance(exc, FtpError):
                raise
            # The loader's own fault, named as such even where it surfaces while formatting
            # (`prepare` is what pulls the rows).
            entry = self._ds.loader.entry
            text = str(exc).strip().splitlines()
            raise RunError(f"data.{self._ds.name}{self._which}: reading rows "
                           f"[data loader {entry.name!r}, plugin {entry.plugin!r}]: "
                           f"{type(exc).__name__}: {text[0] if text else ''}") from exc


def load_records(ds: Dataset, base_dir: Path, seed: int) -> Records:
    """Run the dataset's loader, and again on ``eval_path`` when the dataset has one.

    Raises:
        UserError: for a missing file, a bad row (unless ``on_bad_rows = "skip"``), or no
            rows at all.

    """
    loaders = _loaders(ds)
    records = _load(ds, loaders[0], base_dir, seed, "")
    if len(loaders) > 1:
        records.eval_records = _load(ds, loaders[1], base_dir, seed, " (eval_path)")
    return records


def stream_records(ds: Dataset, base_dir: Path, seed: int,
                   blame: Callable[[Exception], Exception] | None = None) -> RecordStream:
    """`load_records` read as `prepare` goes: a row at a time, never all in memory at once.

    Only the first row (of each file set) is read here; `prepare` reads the rest and gives
    the same result as with `load_records`. ``blame``, when given, words any error the
    loader raises (the runner names its "load data" step with it, wherever the error
    surfaces); by default a loader's bug is a `RunError` naming the loader.

    Raises:
        UserError: as `load_records`, where the rows are read.

    """
    loaders = _loaders(ds)
    records = RecordStream(ds, loaders[0], _context(ds, base_dir, seed), "", blame)
    if len(loaders) > 1:
        records.eval_records = RecordStream(ds, loaders[1], _context(ds, base_dir, seed),
                                            " (eval_path)", blame)
    return records


def _loaders(ds: Dataset) -> list[DataLoader]:
    """The dataset's loader, and one for ``eval_path`` when it has one."""
    loaders = [ds.loader.build()]
    if ds.section.eval_path is not None:
        # The same loader and options, pointed at the held-out file.
        config = ds.loader.config.model_copy(update={"path": ds.section.eval_path})
        loaders.append(ds.loader.cls(config))
    return loaders


def _context(ds: Dataset, base_dir: Path, seed: int) -> LoadContext:
    return LoadContext(dataset=ds.name, base_dir=base_dir, seed=seed,
                       on_bad_rows=ds.section.on_bad_rows)


def _load(ds: Dataset, loader: DataLoader, base_dir: Path, seed: int, which: str) -> Records:
    ctx = _context(ds, base_dir, seed)
    rows = list(loader.rows(ctx))
    if not rows:
        raise UserError(_no_rows(ds, which, ctx.skipped))
    return Records(rows, [ctx.where(r) for r in rows], dict(ctx.skipped), list(ctx.files))


def _no_rows(ds: Dataset, which: str, skipped: dict[str, int]) -> str:
    why = f" (all {sum(skipped.values())} were bad rows, skipped)" if skipped else ""
    return f"data.{ds.name}{which}: the loader returned no rows{why}"


@dataclass
class _Formatter:
    """Converts records with a dataset's format, applying its bad-row policy."""

    ds: Dataset
    fmt: Format
    skipped: dict[str, int]
    unfilled: int = 0
    #: Where each record of the last `run`'s result came from.
    origins: Origins = field(default_factory=Origins)

    def run(self, items: Iterable[tuple[Any, str | None]],
            limit: int | None) -> Sequence[dict[str, Any]]:
        """The formatted records, packed (`PackedRows`) unless one cannot be pickled.

        ``items`` gives each raw record with its origin (`_listed`, or a `RecordStream`).
        Past ``limit`` formatted rows the rest are still read, unformatted, so that what the
        fingerprint counts (rows read, rows skipped) does not depend on how they were read.
        """
        section = self.ds.section
        out: PackedRows | list[dict[str, Any]] = PackedRows()
        self.origins = Origins()
        for i, (record, origin) in enumerate(items):
            if record is None or (limit is not None and len(out) >= limit):
                continue  # consumed by an earlier call (not a row), or past the limit
            where = origin or f"data.{self.ds.name} row {i}"
            if section.placeholders:
                record = fill_placeholders(record, section.placeholders, where)
            elif _has_placeholder(record):
                self.unfilled += 1
            try:
                row = self.fmt.convert(record)
            except (ValueError, KeyError, TypeError) as exc:
                self._bad(where, exc, record)
                continue
            out = _add(out, row)
            self.origins.append(where)
        return out

    def _bad(self, where: str, exc: Exception, record: dict[str, Any]) -> None:
        if isinstance(exc, KeyError):
            reason = f"missing field {exc.args[0]!r}" if exc.args else "missing field"
            detail = f"the row has {sorted(record)}"
        else:
            # Formats word a reason as "general reason; this row's details": the general part
            # is what skipped rows are counted under.
            reason, _, detail = str(exc).partition("; ")
        if self.ds.section.on_bad_rows == "skip":
            self.skipped[reason] = self.skipped.get(reason, 0) + 1
            return
        more = f"; {detail}" if detail else ""
        raise UserError(f"{where}: {reason}{more} (format {self.ds.section.format!r}; set "
                        'on_bad_rows = "skip" to leave such rows out)')


def _listed(records: list[Any], origins: list[str | None],
            consume: bool) -> Iterator[tuple[Any, str | None]]:
    """Each record of a list with its origin; with ``consume``, each set to None as given."""
    for i in range(len(records)):
        record = records[i]
        if consume:
            records[i] = None
        yield record, origins[i] if i < len(origins) else None


def prepare(ds: Dataset, records: list[dict[str, Any]] | RecordStream, base_dir: Path,
            seed: int, consume: bool = False) -> Prepared:
    """Fill placeholders, format and split one dataset's records.

    ``records`` is what `load_records` returned; a plain list works too (its rows are then
    named by index in messages, and ``eval_path`` is not read). The prepared rows are held
    packed (`ftp.packedrows.PackedRows`). With ``consume``, ``records`` (and its
    ``eval_records``) are emptied as they are formatted — each raw row set to None — for a
    caller that needs only the prepared rows: raw and formatted rows then never coexist.
    A `RecordStream` (`stream_records`) is read here, a row at a time,
    and gives the same result as the list would.

    Raises:
        UserError: naming the file and line (or the dataset and row) of a bad record.

    """
    where = f"data.{ds.name}"
    section = ds.section
    fmt: Format = ds.format.build()
    skipped: dict[str, int] = {}
    formatter = _Formatter(ds, fmt, skipped)
    formatted = formatter.run(_items(records, consume), section.limit)
    # Read after the pass: a stream knows its count and the loader's skips only then.
    n_records = records.count if isinstance(records, RecordStream) else len(records)
    _add_counts(skipped, getattr(records, "skipped", {}))
    formatted_origins = formatter.origins
    if not formatted:
        raise UserError(f"{where}: no rows left after leaving out "
                        f"{sum(skipped.values())} bad rows")

    order = _order(len(formatted), seed if section.shuffle else None)
    eval_records = getattr(records, "eval_records", None)
    if eval_records is not None:
        eval_rows = formatter.run(_items(eval_records, consume), None)
        n_eval_read = eval_records.count if isinstance(eval_records, RecordStream) \
            else len(eval_records)
        eval_origins = formatter.origins
        _add_counts(skipped, eval_records.skipped)
        if not eval_rows:
            raise UserError(f"{where}: no rows left in eval_path after leaving out bad rows")
        n_eval = 0
    else:
        n_eval = round(len(order) * section.eval_fraction)
        if section.eval_fraction > 0:
            n_eval = min(max(1, n_eval), len(order) - 1)
            if len(order) < 2:
                raise UserError(f"{where}: eval_fraction needs at least 2 rows, got {len(order)}")
        eval_rows = _take(formatted, order[:n_eval])
        eval_origins = formatted_origins.take(order[:n_eval])
    train_rows = _take(formatted, order[n_eval:])
    train_origins = formatted_origins.take(order[n_eval:])
    del formatted_origins

    fingerprint: dict[str, Any] = {
        "loader": section.loader,
        "format": section.format,
        "rows": n_records,
        "train_rows": len(train_rows),
        "eval_rows": len(eval_rows),
        "records_sha256": digest(formatted),
        "split_sha256": digest([order[:n_eval].tolist()]),
        "on_bad_rows": section.on_bad_rows,
        "skipped": dict(sorted(skipped.items())),
    }
    files = list(getattr(records, "files", []))
    if not files:
        source = getattr(ds.loader.config, "path", None)
        path = LoadContext(ds.name, base_dir).resolve(source) if isinstance(source, str) \
            else None
        files = [path] if path is not None and path.is_file() else []
    if files:
        fingerprint["sources"] = [{"path": str(f.resolve()), "sha256": file_digest(f)}
                                  for f in files]
        if len(files) == 1:
            fingerprint["source"] = fingerprint["sources"][0]["path"]
            fingerprint["source_sha256"] = fingerprint["sources"][0]["sha256"]
    if eval_records is not None:
        fingerprint["eval_rows_read"] = n_eval_read
        fingerprint["eval_sources"] = [{"path": str(f.resolve()), "sha256": file_digest(f)}
                                       for f in eval_records.files]
        fingerprint["eval_records_sha256"] = digest(eval_rows)
    warnings = []
    if formatter.unfilled:
        warnings.append(
            f"{where}: {formatter.unfilled} rows contain {{{{...}}}} placeholders and no "
            "`placeholders` are set; they are trained on literally"
        )
    if skipped:
        warnings.append(f"{where}: skipped {skipped_summary(skipped)} (on_bad_rows = \"skip\")")
    warnings += [f"{where}: {note}" for note in fmt.notes()]
    return Prepared(ds.name, fmt.produces, train_rows, eval_rows, fingerprint, warnings,
                    dict(sorted(skipped.items())), train_origins, eval_origins,
                    section.on_bad_rows)


def _items(records: list[Any] | RecordStream,
           consume: bool) -> Iterable[tuple[Any, str | None]]:
    if isinstance(records, RecordStream):
        return records
    origins = list(getattr(records, "origins", []))
    return _listed(records if consume else list(records), origins, consume)


def _add_counts(into: dict[str, int], counts: dict[str, int]) -> None:
    for reason, n in counts.items():
        into[reason] = into.get(reason, 0) + n


def skipped_summary(skipped: dict[str, int], most: int = 5) -> str:
    """``7 bad rows: 4 invalid JSON, 3 missing field 'output'`` — the commonest reasons first."""
    total = sum(skipped.values())
    ranked = sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0]))
    parts = [f"{n} {reason}" for reason, n in ranked[:most]]
    if len(ranked) > most:
        parts.append(f"{sum(n for _, n in ranked[most:])} for {len(ranked) - most} other reasons")
    return f"{total} bad row{'s' if total != 1 else ''}: " + ", ".join(parts)


def mix_counts(sizes: dict[str, int], weights: dict[str, float]) -> dict[str, int]:
    """How many training rows each dataset gives a weighted mixture.

    The mixture is the largest that uses no row twice and keeps the weights: the dataset that
    runs out first, relative to its weight, is used whole; the others are sampled to match.
    """
    total = sum(weights.values())
    share = {name: w / total for name, w in weights.items()}
    size = min(sizes[name] / share[name] for name in weights)
    return {name: min(sizes[name], round(size * share[name])) for name in weights}


def combine(label: str, parts: list[Prepared], weights: dict[str, float] | None,
            seed: int) -> Prepared:
    """One stage's data from several datasets: concatenated, or mixed by ``weights``.

    Concatenated: every training row, dataset after dataset in the order given. Mixed: a
    seeded sample of each dataset's training rows (sizes from `mix_counts`), shuffled
    together. Held-out rows are always concatenated whole.

    Raises:
        UserError: when a weighted dataset would contribute no row at all.

    """
    rng = random.Random(seed)
    if weights is None:
        counts = {p.name: len(p.train) for p in parts}
        train = _pack(row for p in parts for row in p.train)
        origins = Origins.of(_origin(p, i) for p in parts for i in range(len(p.train)))
    else:
        counts = mix_counts({p.name: len(p.train) for p in parts}, weights)
        empty = [name for name, n in counts.items() if n == 0]
        if empty:
            raise UserError(f"mixture {label}: dataset {empty[0]!r} would give no rows at these "
                            f"weights ({mix_summary(counts)}); raise its weight")
        # Which part and row, not the row itself: the mixture is packed from them.
        picks: list[tuple[int, int, str]] = []
        for k, p in enumerate(parts):
            picked = sorted(rng.sample(range(len(p.train)), counts[p.name]))
            picks.extend((k, i, _origin(p, i)) for i in picked)
        rng.shuffle(picks)
        train = _pack(parts[k].train[i] for k, i, _ in picks)
        origins = Origins.of(where for _, _, where in picks)
    eval_rows = _pack(row for p in parts for row in p.eval)
    eval_origins = Origins.of(where for p in parts for where in p.eval_origins)
    skipped: dict[str, int] = {}
    for p in parts:
        for reason, n in p.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + n
    fingerprint: dict[str, Any] = {
        "datasets": [p.name for p in parts],
        "weights": weights,
        "train_rows_from": counts,
        "train_rows": len(train),
        "eval_rows": len(eval_rows),
        "records_sha256": digest(train),
    }
    # Rows found unusable in training are skipped only where every dataset says so.
    policy = "skip" if all(p.on_bad_rows == "skip" for p in parts) else "error"
    return Prepared(label, parts[0].shape, train, eval_rows, fingerprint, [], skipped,
                    origins, eval_origins, policy)


def _add(rows: PackedRows | list[dict[str, Any]], row: dict[str, Any]
         ) -> PackedRows | list[dict[str, Any]]:
    """``rows`` with ``row`` appended; a row that cannot be pickled turns them into a list."""
    if isinstance(rows, PackedRows):
        try:
            rows.append(row)
            return rows
        except (pickle.PicklingError, TypeError, AttributeError):
            rows = list(rows)  # a format made something unpicklable: keep plain dicts
    rows.append(row)
    return rows


def _pack(rows: Iterable[dict[str, Any]]) -> Sequence[dict[str, Any]]:
    """``rows`` packed, or as a list when one cannot be pickled."""
    out: PackedRows | list[dict[str, Any]] = PackedRows()
    for row in rows:
        out = _add(out, row)
    return out


def _order(n: int, seed: int | None) -> array[int]:
    """``0..n-1``, shuffled as ``random.Random(seed).shuffle`` shuffles a list (None: not).

    The same permutation as the list's, so splits and fingerprints stay as they were, made in
    an int64 array (8 bytes a row; the list held ~36): the same Fisher-Yates steps, drawing
    each index as `random.Random` draws below a bound, from ``getrandbits``.
    """
    order = array("q", range(n))
    if seed is None:
        return order
    bits = random.Random(seed).getrandbits
    for i in range(n - 1, 0, -1):
        k = (i + 1).bit_length()
        j = bits(k)
        while j > i:
            j = bits(k)
        order[i], order[j] = order[j], order[i]
    return order


def _take(rows: Sequence[dict[str, Any]], indices: Sequence[int]) -> Sequence[dict[str, Any]]:
    """The rows at ``indices``: a view of packed rows, else a list."""
    if isinstance(rows, PackedRows):
        return rows.take(indices)
    return [rows[i] for i in indices]


def _origin(part: Prepared, index: int) -> str:
    """Where training row ``index`` of ``part`` came from."""
    if index < len(part.train_origins):
        return part.train_origins[index]
    return f"data.{part.name} training row {index}"


def mix_summary(counts: dict[str, int]) -> str:
    """``a 700 + b 300`` rows."""
    return " + ".join(f"{name} {n}" for name, n in counts.items())


def _has_placeholder(record: Any) -> bool:
    if isinstance(record, str):
        return bool(_PLACEHOLDER.search(record))
    if isinstance(record, list):
        return any(_has_placeholder(v) for v in record)
    if isinstance(record, dict):
        return any(_has_placeholder(v) for v in record.values())
    return False
