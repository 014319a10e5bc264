"""Prepared rows held packed (`ftp.packedrows.PackedRows`) read as the list they replace: the
same rows, the same digests, token for token the same through load → format → tokenize, with
the raw rows let go as they are formatted; and inspect's exact counts on planted duplicates."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from ftp.config import Dataset
from ftp.data import load_records, prepare
from ftp.hashing import digest
from ftp.packedrows import PackedRows
from ftp.plugins import load_plugins
from ftp.testing import (
    data_section,
    make_tiny_tokenizer,
    run_cli,
    stage_section,
    tiny_pipeline,
)
from ftp_builtin.tokenize import tokenize_records

WORDS = ["alpha", "beta", "gamma", "delta", "nova", "fox", "dog", "hello", "world", "who"]


def generated(n: int, duplicates: int = 0, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` distinct alpaca rows (each names its index), then ``duplicates`` exact copies."""
    rng = random.Random(seed)
    rows = [{"instruction": f"row {i}: " + " ".join(rng.choice(WORDS)
                                                     for _ in range(rng.randint(3, 80))),
             "input": "ünïcödé ✓" if i % 5 == 0 else "",
             "output": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30)))}
            for i in range(n)]
    rows += [dict(rows[rng.randrange(n)]) for _ in range(duplicates)]
    rng.shuffle(rows)
    return rows


def test_packed_rows_read_as_the_list_they_hold() -> None:
    rows = [{"n": i, "t": (1, 2), "none": None, "s": "é" * (i % 4)} for i in range(50)]
    packed = PackedRows.of(rows)
    assert len(packed) == 50 and packed == rows and list(packed) == rows
    assert packed[3] == rows[3] and packed[-1] == rows[-1] and packed[5:9] == rows[5:9]
    assert packed[-1]["t"] == (1, 2)  # pickled, not JSON: types come back as they went in
    packed[0]["n"] = 99  # a read is a copy: the stored row is unchanged
    assert packed[0]["n"] == 0
    with pytest.raises(IndexError):
        packed[50]
    view = packed.take([7, 2, 2])
    assert view == [rows[7], rows[2], rows[2]] and view._buf is packed._buf
    assert packed.take([4, 5]) + packed.take([1]) == [rows[4], rows[5], rows[1]]
    assert packed.take([1]) + [{"x": 1}] == [rows[1], {"x": 1}]
    assert [{"x": 1}] + packed.take([1]) == [{"x": 1}, rows[1]]
    assert digest(packed) == digest(rows) and digest({"a": packed}) == digest({"a": rows})
    assert not PackedRows() and PackedRows() == []


def dataset(tmp_path: Path, **section: Any) -> Dataset:
    """The json/alpaca dataset ``big`` of a pipeline on ``rows.jsonl`` in ``tmp_path``."""
    from ftp.config import load_pipeline

    source = tiny_pipeline(tmp_path / "pipeline.toml", "unused",
                           data_section("big", loader="json", path="rows.jsonl",
                                        format="alpaca", **section),
                           stage_section("sft", "big"), name="packed", seed=3)
    return load_pipeline(source, load_plugins()).datasets["big"]


def test_load_format_tokenize_packed_gives_the_in_memory_tokens(tmp_path: Path) -> None:
    rows = generated(1000, duplicates=20)
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    lines[7] = "not json"
    (tmp_path / "rows.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    ds = dataset(tmp_path, eval_fraction=0.1, on_bad_rows="skip")

    # The in-memory path: every raw row kept, each formatted into a plain list.
    kept = [r for i, r in enumerate(rows) if i != 7]
    fmt = ds.format.build()
    formatted = [fmt.convert(r) for r in kept]

    whole = prepare(ds, load_records(ds, tmp_path, 3), tmp_path, 3)  # nothing consumed
    records = load_records(ds, tmp_path, 3)
    consumed = prepare(ds, records, tmp_path, 3, consume=True)
    assert all(r is None for r in records)  # each raw row let go once formatted
    assert isinstance(consumed.train, PackedRows) and isinstance(consumed.eval, PackedRows)
    assert consumed.skipped == {"invalid JSON": 1}
    assert consumed.fingerprint["records_sha256"] == digest(formatted)
    assert consumed.fingerprint["rows"] == whole.fingerprint["rows"] == 1019
    assert consumed.fingerprint == whole.fingerprint
    assert consumed.train == whole.train and consumed.eval == whole.eval
    assert sorted(map(json.dumps, [*consumed.train, *consumed.eval])) == \
        sorted(map(json.dumps, formatted))
    assert consumed.train_origins[:3] == whole.train_origins[:3]
    assert consumed.train_origins[0].startswith(str(tmp_path / "rows.jsonl") + ":")

    tokenizer = make_tiny_tokenizer()
    plain = tokenize_records(tokenizer, list(whole.train), 256, skip_empty=True)
    packed = tokenize_records(tokenizer, consumed.train, 256, skip_empty=True)
    assert plain.truncated > 0 and len(packed.rows) > 300
    assert packed == plain  # token for token, and every count


def test_a_row_that_cannot_be_pickled_keeps_plain_dicts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in generated(20)),
                                         encoding="utf-8")
    ds = dataset(tmp_path)
    records = load_records(ds, tmp_path, 3)
    records[4]["extra"] = threading.Lock()  # what a code format could put in a row
    fmt = ds.format.build()
    keep = fmt.convert

    def convert(record: dict[str, Any]) -> dict[str, Any]:
        out = keep(record)
        if "extra" in record:
            out["extra"] = record["extra"]
        return out

    monkeypatch.setattr(fmt, "convert", convert)
    monkeypatch.setattr(ds.format, "build", lambda: fmt)
    prepared = prepare(ds, records, tmp_path, 3)
    assert isinstance(prepared.train, list) and len(prepared.train) == 20
    assert sum("extra" in r for r in prepared.train) == 1


def test_inspect_counts_planted_duplicates_and_leaks_exactly(
        tiny_model: Path, tmp_path: Path) -> None:
    rows = generated(600, duplicates=37, seed=1)
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows),
                                         encoding="utf-8")
    source = tiny_pipeline(tmp_path / "pipeline.toml", tiny_model,
                           data_section("big", loader="json", path="rows.jsonl",
                                        format="alpaca", eval_fraction=0.2),
                           stage_section("sft", "big", max_length=64), name="planted", seed=3)
    out = tmp_path / "report"
    result = run_cli("data", "inspect", str(source), "--out", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())["datasets"][0]
    distinct = {json.dumps(r, sort_keys=True) for r in rows}
    assert report["rows_read"] == 637
    assert report["duplicates"]["exact_rows"] == 637 - len(distinct) > 0
    # Leaks: held-out rows whose copy was trained on, counted from the split itself.
    ds = dataset(tmp_path, eval_fraction=0.2)
    prepared = prepare(ds, load_records(ds, tmp_path, 3), tmp_path, 3)
    trained = {json.dumps(r, sort_keys=True) for r in prepared.train}
    leaks = sum(json.dumps(r, sort_keys=True) in trained for r in prepared.eval)
    assert report["leakage"]["train/eval"]["exact"] == leaks > 0
