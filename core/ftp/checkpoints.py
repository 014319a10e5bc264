"""Checkpoints inside a stage: when to write them, what they must match, which one is good.

A checkpoint is a transformers Trainer checkpoint (trainable weights, optimizer, scheduler,
RNG states, trainer state with the step) plus ``ftp-checkpoint.json``: the manifest. The
Trainer writes ``checkpoint-N``; ftp then writes the manifest, with a SHA-256 of every file,
and renames the folder to ``step-N``. So a folder named ``step-N`` whose files match their
hashes is complete; anything else (a ``checkpoint-N`` left by a kill mid-write, a truncated
file) is never taken for a good checkpoint.

The manifest also holds what a resume must match, in named parts (the model, the seed, each
stage's options, each dataset's options and records, the tokenizer), so that a refusal can
say what changed. No torch is imported here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftp.errors import UserError
from ftp.hashing import digest, file_digest

if TYPE_CHECKING:
    from ftp.config import Pipeline

MANIFEST = "ftp-checkpoint.json"
FINAL_PREFIX = "step-"
#: What transformers names the folder it is writing; to ftp, an unfinished checkpoint.
TRAINER_PREFIX = "checkpoint-"
DEFAULT_EVERY = "10m"
DEFAULT_KEEP = 2
VERSIONED = ("ftp", "torch", "transformers", "trl", "peft", "accelerate")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}


@dataclass(frozen=True)
class Policy:
    """When a stage writes checkpoints, and how many it keeps.

    Attributes:
        steps: Every this many optimizer steps, or None.
        seconds: Every this many seconds of training, or None.
        keep: How many of the newest checkpoints are kept (the rest are deleted).
        skip_nonfinite: How many steps with a non-finite loss or gradient may be skipped
            before the run stops (0: stop at the first).

    """

    steps: int | None
    seconds: float | None
    keep: int
    skip_nonfinite: int = 0

    @property
    def enabled(self) -> bool:
        """Whether any checkpoint is written on a schedule (SIGTERM/SIGINT always write one)."""
        return bool(self.steps or self.seconds)


def parse_every(value: int | str) -> tuple[int | None, float | None]:
    """``checkpoint_every``: steps (an int), a duration (``"30m"``, ``"90s"``, ``"2h"``) or off.

    Returns:
        ``(steps, seconds)``, one of them set, or both None for ``0`` / ``"off"``.

    Raises:
        ValueError: for anything else, with what is accepted.

    """
    if isinstance(value, bool):
        raise ValueError("give steps (200) or a duration (\"30m\"), or \"off\"")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("steps must be 0 (off) or more")
        return (value or None), None
    if isinstance(value, str):
        if value.strip().lower() in ("off", "no", "0"):
            return None, None
        m = _DURATION.match(value.lower())
        if m and float(m.group(1)) > 0:
            return None, float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    raise ValueError(f"{value!r} is not steps (200) or a duration (\"30m\", \"90s\", \"2h\"); "
                     "\"off\" turns scheduled checkpoints off")


# -- what a resume must match -------------------------------------------------------------


def _stage_options(stage: Any) -> dict[str, Any]:
    return {"method": stage.method.entry.name, "data": stage.datasets, "weights": stage.weights,
            "adapter": stage.adapter.model_dump() if stage.adapter else None,
            "options": stage.method.config.model_dump(mode="json")}


def _data_options(ds: Any) -> dict[str, Any]:
    section = ds.section.model_dump(mode="json", exclude={"format_options"})
    return {**section, "loader_options": ds.loader.config.model_dump(mode="json"),
            "format_options": ds.format.config.model_dump(mode="json")}


def _records(fingerprint: dict[str, Any]) -> str:
    """What decides a dataset's rows: their content and split, not where the files lie."""
    keys = ("records_sha256", "split_sha256", "eval_records_sha256", "train_rows", "eval_rows")
    return digest({k: fingerprint.get(k) for k in keys})


def identity(pipeline: Pipeline, upto: int, data: dict[str, Any], tokenizer: str
             ) -> dict[str, str]:
    """Named hashes of everything that decides training up to and including stage ``upto``.

    Args:
        pipeline: The validated pipeline.
        upto: Index of the last stage that counts.
        data: Dataset name → its ``data.json`` fingerprint.
        tokenizer: `ftp.cache.tokenizer_fingerprint` of the tokenizer in use.

    """
    parts: dict[str, str] = {
        "model": digest({"provider": pipeline.model.entry.name,
                         **pipeline.model.config.model_dump(mode="json")}),
        "seed": str(pipeline.seed),
        "tokenizer": tokenizer,
    }
    used: list[str] = []
    for stage in pipeline.stages[: upto + 1]:
        parts[f"stage {stage.name!r} options"] = digest(_stage_options(stage))
        used += [n for n in stage.datasets if n not in used]
    for name in used:
        parts[f"data {name!r} options"] = digest(_data_options(pipeline.datasets[name]))
        if name in data:
            parts[f"data {name!r} records"] = _records(data[name])
    return parts


def versions() -> dict[str, str | None]:
    """Versions of ftp and the libraries that train, recorded with every checkpoint."""
    out: dict[str, str | None] = {}
    for name in VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def changed(recorded: dict[str, str], current: dict[str, str]) -> list[str]:
    """The names of parts that differ (or are new or gone), in a stable order."""
    keys = list(dict.fromkeys([*recorded, *current]))
    return [k for k in keys if recorded.get(k) != current.get(k)]


def refuse_if_changed(recorded: dict[str, str], current: dict[str, str], what: str) -> None:
    """Refuse to resume when anything that decides training differs from ``recorded``.

    Raises:
        UserError: naming every part that changed.

    """
    diff = changed(recorded, current)
    if diff:
        raise UserError(f"cannot resume: {', '.join(diff)} changed since {what} was written; "
                        "undo the change, or start over with --overwrite")


# -- writing ------------------------------------------------------------------------------


def finalize(stage_dir: Path, step: int, stage: str, parts: dict[str, str]) -> Path:
    """Turn the Trainer's ``checkpoint-STEP`` into a complete, hashed ``step-STEP``.

    Returns:
        The final folder.

    """
    work = stage_dir / f"{TRAINER_PREFIX}{step}"
    final = stage_dir / f"{FINAL_PREFIX}{step}"
    files = {str(p.relative_to(work)): file_digest(p)
             for p in sorted(work.rglob("*")) if p.is_file()}
    manifest = {"stage": stage, "step": step, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "identity": parts, "versions": versions(), "files": files}
    tmp = work / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, work / MANIFEST)
    if final.exists():  # a checkpoint of this step from before a resume: the new one wins
        shutil.rmtree(final)
    os.replace(work, final)
    return final


def prune(stage_dir: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest complete checkpoints, and any unfinished ones."""
    for old in complete(stage_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for partial in stage_dir.glob(f"{TRAINER_PREFIX}*"):
        shutil.rmtree(partial, ignore_errors=True)


def discard_after(stage_dir: Path, step: int) -> None:
    """Delete checkpoints newer than ``step`` (damaged ones, or an abandoned attempt's)."""
    for folder in complete(stage_dir):
        if _step_of(folder) > step:
            shutil.rmtree(folder, ignore_errors=True)
    for partial in stage_dir.glob(f"{TRAINER_PREFIX}*") if stage_dir.is_dir() else []:
        shutil.rmtree(partial, ignore_errors=True)


# -- reading ------------------------------------------------------------------------------


def _step_of(folder: Path) -> int:
    try:
        return int(folder.name[len(FINAL_PREFIX):])
    except ValueError:
        return -1


def complete(stage_dir: Path) -> list[Path]:
    """``step-N`` folders, oldest first (unverified)."""
    if not stage_dir.is_dir():
        return []
    found = [p for p in stage_dir.glob(f"{FINAL_PREFIX}*") if p.is_dir() and _step_of(p) >= 0]
    return sorted(found, key=_step_of)


def damage(folder: Path) -> str | None:
    """What is wrong with a checkpoint folder, or None when every file matches its hash."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"its {MANIFEST} is missing or unreadable"
    for name, sha in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if file_digest(path) != sha:
            return f"{name} does not match its recorded hash"
    return None


def manifest(folder: Path) -> dict[str, Any]:
    """A verified checkpoint's manifest."""
    return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))


def newest_good(stage_dir: Path, warn: Any = print) -> Path | None:
    """The newest checkpoint whose files are intact; each damaged newer one is reported.

    Args:
        stage_dir: The stage's ``checkpoints`` folder.
        warn: Called with one line per damaged checkpoint passed over.

    """
    for folder in reversed(complete(stage_dir)):
        problem = damage(folder)
        if problem is None:
            return folder
        warn(f"checkpoint {folder} is damaged ({problem}); trying the one before it")
    return None


def step_of(folder: Path) -> int:
    """The optimizer step a ``step-N`` checkpoint was written at."""
    return _step_of(folder)
