"""What ftp hands a component when it asks it to do its work."""

from __future__ import annotations

import glob
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftp.errors import UserError

# Characters a path pattern must hold to be read as a glob rather than one file's name.
_GLOB_CHARS = frozenset("*?[")


class PipelinePaths:
    """Paths as written in a pipeline file: relative ones are relative to its folder."""

    base_dir: Path

    def resolve(self, path: str | Path) -> Path:
        """``path`` as written in the pipeline file, resolved against its folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)


@dataclass
class LoadContext(PipelinePaths):
    """Given to `DataLoader.load`.

    A loader returns its records as a list of dicts (or yields them: `DataLoader.rows`). To
    make problems traceable it may also say where each record came from (`origin`) and report
    rows it cannot use (`bad_row`):
    with ``on_bad_rows = "error"`` (the default) that stops the run with one line naming the
    place and the reason; with ``"skip"`` the row is counted by reason and left out.

    Attributes:
        dataset: The dataset's name in the pipeline file.
        base_dir: The pipeline file's folder; relative paths are resolved against it.
        seed: The pipeline's seed.
        on_bad_rows: ``"error"`` or ``"skip"``, from the dataset's section.
        skipped: Rows skipped so far, by reason.
        files: Files read so far (through `files`), for the run's provenance record.

    """

    dataset: str
    base_dir: Path
    seed: int = 42
    on_bad_rows: str = "error"
    skipped: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    # id(record) -> (record, where); the record is held so its id stays unique.
    _origins: dict[int, tuple[Any, str]] = field(default_factory=dict, repr=False)

    def expand(self, path: str, pattern: str | None = None,
               suffixes: tuple[str, ...] = ()) -> list[Path]:
        """The files ``path`` names, in sorted order, recorded in `files`.

        ``path`` is a file, a glob (``data/*.jsonl``, ``data/**/*.csv``), or a folder; in a
        folder, the files matching ``pattern`` or, without one, those ending in ``suffixes``.

        Raises:
            UserError: when nothing matches.

        """
        resolved = self.resolve(path)
        if _GLOB_CHARS & set(str(path)):
            found = sorted(Path(p) for p in glob.glob(str(resolved), recursive=True))
            files = [p for p in found if p.is_file()]
            if not files:
                raise UserError(f"no files match {resolved}")
        elif resolved.is_file():
            files = [resolved]
        elif resolved.is_dir():
            if pattern is not None:
                files = sorted(p for p in resolved.glob(pattern) if p.is_file())
                what = f"glob {pattern!r}"
            else:
                files = sorted(p for p in resolved.iterdir()
                               if p.is_file() and p.name.lower().endswith(suffixes))
                what = "any of " + ", ".join(suffixes)
            if not files:
                raise UserError(f"{resolved}: no files match {what}")
        else:
            raise UserError(f"data file not found: {resolved}")
        self.files.extend(files)
        return files

    def origin(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        """Note that ``record`` came from ``where`` (``file:line``, ``file[index]``); returns it.

        Problems the format finds in the record later are reported at that place.
        """
        self._origins[id(record)] = (record, where)
        return record

    def where(self, record: dict[str, Any]) -> str | None:
        """Where `origin` said ``record`` came from, or None."""
        found = self._origins.get(id(record))
        return found[1] if found is not None and found[0] is record else None

    def pop_where(self, record: dict[str, Any]) -> str | None:
        """Like `where`, and forget the record.

        ftp calls it on rows it reads one at a time, so the context keeps no row alive.
        """
        found = self._origins.pop(id(record), None)
        return found[1] if found is not None and found[0] is record else None

    def bad_row(self, where: str, reason: str, detail: str = "") -> None:
        """Report a row that cannot be used; the caller leaves it out and carries on.

        Args:
            where: The place, e.g. ``data/x.jsonl:12`` or ``data/x.json[3]``.
            reason: A short, general reason, the key under which skips are counted
                (``invalid JSON``, ``missing field 'output'``).
            detail: What exactly was wrong with this row, for the error message.

        Raises:
            UserError: ``where: reason (detail)``, unless ``on_bad_rows`` is ``"skip"``.

        """
        if self.on_bad_rows != "skip":
            more = f" ({detail})" if detail else ""
            hint = '; set on_bad_rows = "skip" to leave such rows out'
            raise UserError(f"{where}: {reason}{more}{hint}")
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


@dataclass
class TrainContext:
    """Given to `Method.train`.

    Attributes:
        stage: The stage's name.
        model: The model to train (already on its device).
        tokenizer: Its tokenizer.
        provider: The model provider, for adapters.
        train: Training records, in the shape of the stage's format.
        eval: Held-out records, or None.
        adapter: The stage's adapter settings (an ``AdapterSection``), or None for full finetuning.
        output_dir: Where the method may write checkpoints.
        seed: The pipeline's seed.
        callbacks: ``transformers.TrainerCallback`` objects the trainer must use.
        log: Call with a dict of metrics to record them in metrics.jsonl.
        origins: Where each training record came from (``file:line``, ``file[index]``), in
            the order of ``train``; `where` falls back to the row's index.
        on_bad_rows: ``"error"`` or ``"skip"``: what `bad_rows` does (the dataset's setting;
            ``"skip"`` for several datasets only when each of them says so).
        skipped: Training rows the method left out through `bad_rows`, by reason.
        resume_from: A checkpoint of this stage to continue from, or None. A method passes it
            to ``trainer.train(resume_from_checkpoint=...)``; ftp refuses a method that does
            not (training would silently restart at step 0).

    A record can turn out unusable only once it is tokenized: cut at ``max_length`` before its
    first trained token, it has nothing to learn from. A method reports such rows with
    `bad_rows`, which stops the run naming them, or with ``on_bad_rows = "skip"`` counts them
    (``data.json`` records the counts with the dataset's other skipped rows).

    """

    stage: str
    model: Any
    tokenizer: Any
    provider: Any
    train: Sequence[dict[str, Any]]
    eval: Sequence[dict[str, Any]] | None
    adapter: Any
    output_dir: Path
    seed: int
    callbacks: list[Any] = field(default_factory=list)
    log: Callable[[dict[str, Any]], None] = lambda metrics: None
    origins: Sequence[str | None] = field(default_factory=list)
    on_bad_rows: str = "error"
    skipped: dict[str, int] = field(default_factory=dict)
    resume_from: Path | None = None
    #: The ``[distributed]`` table (`ftp.distributed.config.DistributedSection`) the stage
    #: trains under, or None in one process; `ftp.training` turns it into trainer options.
    distributed: Any = None

    def where(self, index: int) -> str:
        """Where training record ``index`` came from, or ``training row INDEX``."""
        found = self.origins[index] if 0 <= index < len(self.origins) else None
        return found or f"training row {index}"

    def bad_rows(self, reason: str, rows: list[tuple[int, str]], hint: str = "") -> list[int]:
        """Report training records the method cannot use, named by where they came from.

        Args:
            reason: A short, general reason, the key under which skips are counted (``no
                trained token after truncation to max_length=1024``).
            rows: ``(index into train, detail)`` for each such record.
            hint: What else the user could do, for the error message (``raise max_length``).

        Returns:
            The indices to leave out (all of ``rows``), when ``on_bad_rows`` is ``"skip"``.

        Raises:
            UserError: naming the first few places and the reason, unless ``on_bad_rows``
                is ``"skip"``.

        """
        if not rows:
            return []
        listed = "; ".join(f"{self.where(i)}{f' ({d})' if d else ''}" for i, d in rows[:5])
        more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
        if self.on_bad_rows != "skip":
            also = f"{hint}, or set" if hint else "set"
            raise UserError(f"{len(rows)} of {len(self.train)} training rows: {reason} — "
                            f"{listed}{more}. {also[0].upper()}{also[1:]} on_bad_rows = "
                            "\"skip\" to leave such rows out")
        self.skipped[reason] = self.skipped.get(reason, 0) + len(rows)
        message = f"skipped {len(rows)} training rows: {reason} — {listed}{more}"
        print(f"  warning: {message} (on_bad_rows = \"skip\")", flush=True)
        self.log({"stage": self.stage, "event": "skipped", "reason": reason,
                  "rows": [self.where(i) for i, _ in rows]})
        return [i for i, _ in rows]


@dataclass
class EvalContext(PipelinePaths):
    """Given to `Evaluator.evaluate`.

    Attributes:
        stage: The stage just finished, or ``"base"`` before training.
        model: The model to judge.
        tokenizer: Its tokenizer.
        data: Records in the shape of the evaluator's dataset, or None.
        seed: The pipeline's seed.
        previous: The results this same ``[[evaluate]]`` entry returned last, on an earlier
            model of this pipeline (before training, or after an earlier stage), or None.
            Lets an evaluator report change relative to that model, e.g. DPO's reward
            accuracy relative to the reference.
        previous_stage: The stage ``previous`` was measured after (``"base"``: before
            training), or None.
        base_dir: The pipeline file's folder; relative paths in an evaluator's options are
            resolved against it (`resolve`), as every path in a pipeline is.

    """

    stage: str
    model: Any
    tokenizer: Any
    data: Sequence[dict[str, Any]] | None
    seed: int = 42
    previous: dict[str, Any] | None = None
    previous_stage: str | None = None
    base_dir: Path = field(default_factory=Path.cwd)

