"""Rewards computed from the completion's text: format, exact and numeric answers, length, JSON.

Each compares a completion with nothing, or with one field of its row (``field``): the
prompt-only format keeps a record's other fields, e.g. ``answer``, for exactly this.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from ftp import Reward, StrictConfig, UserError


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, re.DOTALL)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None


class _Extracting(StrictConfig):
    """Where the answer is in a completion."""

    extract: str | None = Field(
        None, description="A regular expression whose first group (or whole match) is the "
        "answer, e.g. '<answer>(.*?)</answer>'; no match scores 0. Default: the whole "
        "completion."
    )

    @field_validator("extract")
    @classmethod
    def _valid_regex(cls, v: str | None) -> str | None:
        if v is not None:
            _compile(v)
        return v

    def answer(self, completion: str) -> str | None:
        """The answer part of ``completion``, or None when ``extract`` finds none."""
        if self.extract is None:
            return completion
        match = _compile(self.extract).search(completion)
        if match is None:
            return None
        return match.group(1) if match.groups() else match.group(0)


def _field(row: dict[str, Any], name: str, reward: str) -> Any:
    if name not in row:
        keys = ", ".join(sorted(row)) or "none"
        raise UserError(f"reward {reward!r}: the row has no field {name!r} (fields: {keys}); "
                        "set `field` to the one holding the reference answer")
    return row[name]


class RegexReward(Reward):
    """1.0 when the completion matches a regular expression (a format check), else 0.0."""

    name = "regex"

    class Config(StrictConfig):
        """The pattern and how it must match."""

        pattern: str = Field(description="A Python regular expression ('.' matches newlines).")
        full: bool = Field(False, description="The whole completion (stripped) must match, "
                           "not just a part of it.")

        @field_validator("pattern")
        @classmethod
        def _valid_regex(cls, v: str) -> str:
            _compile(v)
            return v

    config: Config

    def score(self, prompts: list[Any], completions: list[str],
              rows: list[dict[str, Any]]) -> list[float | None]:
        """1.0 per completion that matches."""
        pattern = _compile(self.config.pattern)
        find = pattern.fullmatch if self.config.full else pattern.search
        return [float(find(c.strip() if self.config.full else c) is not None)
                for c in completions]


class ExactMatch(Reward):
    """1.0 when the completion's answer equals a field of the row (after stripping), else 0.0."""

    name = "exact_match"

    class Config(_Extracting):
        """The reference field and how to compare."""

        field: str = Field("answer", description="The row field holding the reference answer.")
        ignore_case: bool = Field(False, description="Compare case-insensitively.")

    config: Config

    def score(self, prompts: list[Any], completions: list[str],
              rows: list[dict[str, Any]]) -> list[float | None]:
        """1.0 per completion whose answer equals its row's reference."""
        out: list[float | None] = []
        for completion, row in zip(completions, rows, strict=True):
            answer = self.config.answer(completion)
            reference = str(_field(row, self.config.field, self.name))
            if answer is None:
                out.append(0.0)
                continue
            a, b = answer.strip(), reference.strip()
            if self.config.ignore_case:
                a, b = a.lower(), b.lower()
            out.append(float(a == b))
        return out


_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def parse_number(text: str) -> float | None:
    """The last number written in ``text`` (thousands separators allowed), or None."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


class NumericAnswer(Reward):
    """1.0 when the last number in the completion's answer equals a row field's number."""

    name = "numeric_answer"

    class Config(_Extracting):
        """The reference field and the tolerance."""

        field: str = Field("answer", description="The row field holding the reference number.")
        tolerance: float = Field(1e-6, ge=0, description="Largest absolute difference that "
                                 "still counts as equal.")

    config: Config

    def score(self, prompts: list[Any], completions: list[str],
              rows: list[dict[str, Any]]) -> list[float | None]:
        """1.0 per completion whose number is within ``tolerance`` of its row's."""
        out: list[float | None] = []
        for completion, row in zip(completions, rows, strict=True):
            raw = _field(row, self.config.field, self.name)
            reference = raw if isinstance(raw, int | float) else parse_number(str(raw))
            if reference is None:
                raise UserError(f"reward {self.name!r}: field {self.config.field!r} holds "
                                f"{raw!r}, not a number")
            answer = self.config.answer(completion)
            got = parse_number(answer) if answer is not None else None
            ok = got is not None and math.isclose(got, float(reference), rel_tol=0,
                                                  abs_tol=self.config.tolerance)
            out.append(float(ok))
        return out


class Length(Reward):
    """1.0 inside a target length range, falling linearly to 0.0 at ``slack`` outside it."""

    name = "length"

    class Config(StrictConfig):
        """The target range, in characters or words."""

        min: int = Field(0, ge=0, description="Shortest length that scores 1.0.")
        max: int = Field(gt=0, description="Longest length that scores 1.0.")
        unit: str = Field("chars", pattern="^(chars|words)$",
                          description="Count 'chars' or whitespace-separated 'words'.")
        slack: int = Field(0, ge=0, description="How far outside the range the score falls "
                           "to 0.0; 0: a hard step.")

        @model_validator(mode="after")
        def _ordered(self) -> Length.Config:
            if self.min > self.max:
                raise ValueError(f"min ({self.min}) is above max ({self.max})")
            return self

    config: Config

    def score(self, prompts: list[Any], completions: list[str],
              rows: list[dict[str, Any]]) -> list[float | None]:
        """The score of each completion's length."""
        cfg = self.config
        out: list[float | None] = []
        for completion in completions:
            n = len(completion.split()) if cfg.unit == "words" else len(completion)
            outside = max(cfg.min - n, n - cfg.max, 0)
            if outside == 0:
                out.append(1.0)
            elif cfg.slack == 0:
                out.append(0.0)
            else:
                out.append(max(0.0, 1.0 - outside / cfg.slack))
        return out


class JsonValid(Reward):
    """1.0 when the completion's answer is valid JSON (of the given schema, if any), else 0.0."""

    name = "json_valid"

    class Config(_Extracting):
        """An optional schema: required keys and their JSON types."""

        json_schema: dict[str, Any] | None = Field(
            None, description="A JSON Schema subset the value must satisfy: type, properties, "
            "required, items, enum."
        )

    config: Config

    def score(self, prompts: list[Any], completions: list[str],
              rows: list[dict[str, Any]]) -> list[float | None]:
        """1.0 per completion whose answer parses (and fits the schema)."""
        out: list[float | None] = []
        for completion in completions:
            answer = self.config.answer(completion)
            try:
                value = json.loads(answer) if answer is not None else None
            except json.JSONDecodeError:
                out.append(0.0)
                continue
            ok = answer is not None and (self.config.json_schema is None
                                         or fits_schema(value, self.config.json_schema))
            out.append(float(ok))
        return out


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,),
    "integer": (int,), "number": (int, float), "null": (type(None),),
}


def fits_schema(value: Any, schema: dict[str, Any]) -> bool:
    """Whether ``value`` satisfies a small subset of JSON Schema (no third-party validator).

    Supported: ``type`` (one or a list), ``enum``, ``properties``, ``required``, ``items``.
    """
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        # bool is an int in Python, but not a number in JSON.
        if isinstance(value, bool) and "boolean" not in kinds:
            return False
        if not any(isinstance(value, _JSON_TYPES.get(k, ())) for k in kinds):
            return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if isinstance(value, dict):
        if any(key not in value for key in schema.get("required", [])):
            return False
        for key, sub in schema.get("properties", {}).items():
            if key in value and not fits_schema(value[key], sub):
                return False
    if isinstance(value, list) and "items" in schema:
        return all(fits_schema(item, schema["items"]) for item in value)
    return True
