"""A run folder's files, read for a report: every one optional, none trusted to be whole.

A report is built from these files only (never from a live process), so it can be rebuilt for
any run folder, including ones written before reports existed, failed ones and killed ones.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftp.jsonfiles import read_json_object

#: Logged per step by the trainers, but not a curve over steps.
NOT_CURVES = frozenset({"stage", "step", "epoch", "event", "tokens_seen", "train_loss",
                        "train_runtime", "train_samples_per_second", "train_steps_per_second",
                        "total_flos", "num_input_tokens_seen", "train_tokens_per_second"})


def as_float(value: Any) -> float | None:
    """A metric value as a float: numbers, and the "nan"/"inf" strings ftp records."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.lower() in ("nan", "inf", "-inf"):
        return float(value)
    return None


@dataclass
class RunFiles:
    """What a run folder holds, each file parsed (empty where missing or unreadable)."""

    path: Path
    status: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    resolved: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    pipeline_text: str = ""

    @classmethod
    def read(cls, path: Path) -> RunFiles:
        """Read every file the report uses from the run folder ``path``."""
        def mapping(name: str) -> dict[str, Any]:
            return read_json_object(path / name)

        metrics: list[dict[str, Any]] = []
        try:
            lines = (path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        except OSError:
            lines = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # half a line, written as a process died
            if isinstance(record, dict):
                metrics.append(record)
        try:
            text = (path / "pipeline.toml").read_text(encoding="utf-8")
        except OSError:
            text = ""
        return cls(path, mapping("run.json"), mapping("results.json"), mapping("data.json"),
                   mapping("resolved.json"), mapping("environment.json"), metrics, text)

    @property
    def name(self) -> str:
        """The pipeline's name, else the folder's."""
        return str(self.status.get("pipeline") or self.results.get("pipeline")
                   or self.path.name)

    @property
    def state(self) -> str:
        """The run's state: run.json's status, ``killed`` for a dead ``running`` owner."""
        from ftp.rundir import RunDir

        return RunDir(self.path).state() if self.status else "unknown"

    def stages(self) -> list[str]:
        """The trained stages, in the order their metrics were logged."""
        seen: list[str] = []
        for record in self.metrics:
            stage = record.get("stage")
            if isinstance(stage, str) and stage not in seen:
                seen.append(stage)
        return seen

    def curve(self, stage: str, key: str) -> list[tuple[float, float]]:
        """``key`` over steps in ``stage`` (non-finite values kept: charts drop them)."""
        points = []
        for record in self.metrics:
            if record.get("stage") != stage or record.get("event") or key not in record \
                    or "train_loss" in record:  # the trainer's closing summary: not a step
                continue
            step, value = as_float(record.get("step")), as_float(record[key])
            if step is not None and value is not None:
                points.append((step, value))
        return points

    def curve_keys(self, stage: str) -> list[str]:
        """Every numeric per-step key logged in ``stage``, in first-seen order."""
        keys: list[str] = []
        for record in self.metrics:
            if record.get("stage") != stage or record.get("event"):
                continue
            for key, value in record.items():
                if key not in NOT_CURVES and key not in keys and as_float(value) is not None:
                    keys.append(key)
        return keys

    def closing(self, stage: str) -> dict[str, Any]:
        """The trainer's closing summary of ``stage`` (``train_loss``, ``train_runtime``...)."""
        return next((r for r in reversed(self.metrics)
                     if r.get("stage") == stage and "train_loss" in r), {})

    def counts_tokens(self, stage: str) -> bool:
        """Whether the trainer of ``stage`` counted its input tokens (some never do: 0 logged)."""
        return any(as_float(r.get("tokens_seen")) for r in self.metrics
                   if r.get("stage") == stage and not r.get("event"))

    def steps(self, stage: str) -> int | None:
        """The optimizer steps ``stage`` took: the trainer's closing summary's step.

        The last *logged* step is not it (36 steps logged every 5 end at 35), so the summary's
        ``step`` (the trainer's ``global_step`` when it finished) is used; a stage that did not
        finish (failed, killed) has none, and then the last step it logged is the best known.
        """
        logged: list[float] = []
        finished: float | None = None
        for record in self.metrics:
            step = as_float(record.get("step"))
            if record.get("stage") != stage or step is None:
                continue
            logged.append(step)
            if "train_loss" in record:
                finished = step
        found = finished if finished is not None else max(logged, default=None)
        return None if found is None else int(found)

    def tokenized(self, stage: str) -> dict[str, Any]:
        """The method's ``tokenized`` record for ``stage`` (rows, tokens, truncated...).

        Continued pretraining packs documents into blocks instead: its ``packed`` record.
        """
        found: dict[str, Any] = {}
        for record in self.metrics:
            if record.get("stage") == stage and record.get("event") in ("tokenized", "packed"):
                found = {k: v for k, v in record.items() if k not in ("stage", "event")}
        return found

    def pipeline_raw(self) -> dict[str, Any]:
        """The pipeline as run (``--set`` applied): resolved.json's, else pipeline.toml's."""
        raw = self.resolved.get("raw")
        if isinstance(raw, dict):
            return raw
        try:
            return tomllib.loads(self.pipeline_text) if self.pipeline_text else {}
        except tomllib.TOMLDecodeError:
            return {}

    def evaluations(self) -> dict[str, dict[str, Any]]:
        """results.json's evaluations: stage (``base`` first) → evaluation → result."""
        stages = self.results.get("stages")
        if not isinstance(stages, dict):
            return {}
        return {k: v for k, v in stages.items() if isinstance(v, dict)}

    def final_value(self, stage: str, key: str) -> float | None:
        """The last finite value of ``key`` logged in ``stage``."""
        values = [y for _, y in self.curve(stage, key) if math.isfinite(y)]
        return values[-1] if values else None
