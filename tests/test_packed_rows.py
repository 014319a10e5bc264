"""Prepared rows held packed (`ftp.packedrows.PackedRows`) read as the list they replace: the
same rows, the same digests, token for token the same through load → format → tokenize, with
the raw rows let go as they are formatted; spilled past a memory limit to an unlinked file
that forked children read too, the same through a whole run; and inspect's exact counts on
planted duplicates."""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import pickle
import random
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

from ftp.config import Dataset
from ftp.data import load_records, prepare
from ftp.errors import UserError
from ftp.hashing import digest
from ftp.packedrows import SPILL_BYTES, PackedRows, spill_bytes
from ftp.plugins import load_plugins
from ftp.testing import (
    data_section,
    make_tiny_tokenizer,
    run_cli,
    run_pipeline,
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
    assert view == [rows[7], rows[2], rows[2]] and view._store is packed._store
    assert packed.take([4, 5]) + packed.take([1]) == [rows[4], rows[5], rows[1]]
    assert packed.take([1]) + [{"x": 1}] == [rows[1], {"x": 1}]
    assert [{"x": 1}] + packed.take([1]) == [{"x": 1}, rows[1]]
    assert digest(packed) == digest(rows) and digest({"a": packed}) == digest({"a": rows})
    assert not PackedRows() and PackedRows() == []


def _read_in_child(rows: PackedRows, conn: Any) -> None:
    """In a forked child: send back what it reads of ``rows``."""
    conn.send([list(rows), rows[len(rows) // 2], rows.take(range(3, 9))[::-1]])
    conn.close()


def test_rows_past_the_limit_spill_to_an_unlinked_file_and_read_back_the_same(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert spill_bytes() == SPILL_BYTES == 32 << 20
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where the spill file would be named
    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.setenv("FTP_PACKED_SPILL_BYTES", "2000")
    rows = generated(400) + [{"big": "x" * 5000, "n": 1}] + generated(20, seed=2)
    packed = PackedRows()
    for row in rows:
        packed.append(row)
        assert len(packed._store.mem) <= 2000  # never more than the limit in memory
    assert packed._store.filed > 20 * 2000 and list(tmp_path.iterdir()) == []  # unlinked
    assert len(packed) == len(rows) and packed == rows and list(packed) == rows
    assert all(packed[i] == rows[i] for i in range(-len(rows), len(rows)))
    assert packed[395:410] == rows[395:410] and packed[::37] == rows[::37]
    assert packed[-1] == rows[-1]  # a row still in memory
    order = list(range(len(rows)))
    random.Random(5).shuffle(order)
    view = packed.take(order)
    assert view._store is packed._store and list(view) == [rows[i] for i in order]
    train, held = packed.take(order[40:]), packed.take(order[:40])
    both = held + train
    assert both._store is packed._store and both == [rows[i] for i in order]
    assert packed.take(range(390, 405)) + [{"x": 1}] == [*rows[390:405], {"x": 1}]
    assert digest(packed) == digest(rows) and digest(view.take(range(10, 30))) == \
        digest([rows[i] for i in order[10:30]])
    # Pickled or copied: the rows themselves, not the file's descriptor.
    assert pickle.loads(pickle.dumps(view)) == view and copy.deepcopy(packed) == rows
    packed.append({"late": True})  # a store grows after its views were made
    assert packed[-1] == {"late": True} and view == [rows[i] for i in order]

    # A forked child (as tokenize_parallel forks) reads the same rows from the same file.
    context = multiprocessing.get_context("fork")
    ours, theirs = context.Pipe()
    child = context.Process(target=_read_in_child, args=(view, theirs))
    child.start()
    got = ours.recv()
    child.join()
    assert child.exitcode == 0
    assert got == [list(view), view[len(view) // 2], [rows[i] for i in order[3:9]][::-1]]

    store = packed._store
    descriptor = store.file.fileno()
    os.fstat(descriptor)
    del packed, view, train, held, both, store
    with pytest.raises(OSError):  # closed with the last view
        os.fstat(descriptor)

    monkeypatch.setenv("FTP_PACKED_SPILL_BYTES", "lots")
    with pytest.raises(UserError, match="FTP_PACKED_SPILL_BYTES='lots'"):
        PackedRows()


def test_a_run_with_rows_spilled_trains_on_the_same_data(
        tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "rows.jsonl"
    lines = [json.dumps(r, ensure_ascii=False) for r in generated(300, duplicates=5)]
    lines[11] = "not json"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    text = f"""
        [pipeline]
        name = "spill"
        seed = 3

        [model]
        path = {json.dumps(str(tiny_model))}

        [data.big]
        loader = "json"
        path = {json.dumps(str(data))}
        format = "alpaca"
        eval_fraction = 0.1
        on_bad_rows = "skip"

        [[stages]]
        method = "sft"
        data = "big"
        max_steps = 2
        batch_size = 4
        max_length = 128
        logging_steps = 1
    """
    runs = {}
    for label, limit, per_process in (("memory", "", "1000000"), ("spilled", "2000", "100")):
        monkeypatch.setenv("FTP_PACKED_SPILL_BYTES", limit)
        monkeypatch.setenv("FTP_TOKENIZE_ROWS_PER_PROCESS", per_process)  # forked: read too
        monkeypatch.setenv("FTP_TOKENIZED_CACHE_DIR", str(tmp_path / f"cache-{label}"))
        runs[label] = run_pipeline(text, tmp_path / label)
    facts = [json.loads((r.run_dir / "data.json").read_text())["big"] for r in runs.values()]
    assert facts[0] == facts[1] and facts[0]["skipped"]["invalid JSON"] == 1
    assert facts[0]["tokenized"]["sft"]["truncated"] > 0
    losses = [[json.loads(line)["loss"] for line in
               (r.run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
              for r in runs.values()]
    assert len(losses[0]) == 2 and losses[0] == losses[1]


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
