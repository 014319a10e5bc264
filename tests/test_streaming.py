"""Datasets read a row at a time (`ftp.data.stream_records`, `DataLoader.rows`) give what the
rows read whole give: the same formatted rows in the same order, fingerprint, origins, skips,
tokens and labels, for JSON Lines, JSON arrays, CSV and Parquet; a third-party loader that
returns a list works unchanged; a loader's own fault is named as the loader's."""

from __future__ import annotations

import csv
import importlib.util
import json
import random
from pathlib import Path
from typing import Any

import pytest

import ftp
from ftp.config import Dataset, load_pipeline
from ftp.data import RecordStream, load_records, prepare, stream_records
from ftp.datacheck.inspect import empty_fields
from ftp.errors import FtpError
from ftp.plugins import load_plugins
from ftp.testing import (
    data_section,
    make_tiny_tokenizer,
    plugin_set,
    run_pipeline,
    stage_section,
    tiny_pipeline,
)
from ftp_builtin.tokenize import tokenize_records

pytestmark = pytest.mark.usefixtures("one_thread")

_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "make_big_data.py"


def big_rows(n: int, path: Path) -> list[dict[str, Any]]:
    """``n`` rows of the benchmark's generated data (benchmarks/make_big_data.py), as written."""
    spec = importlib.util.spec_from_file_location("make_big_data", _SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write(n, path)
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def dataset(tmp_path: Path, loader: str, path: str, **options: Any) -> Dataset:
    source = tiny_pipeline(tmp_path / "pipeline.toml", "unused",
                           data_section("big", loader=loader, path=path, format="alpaca",
                                        **options),
                           stage_section("sft", "big"), seed=3)
    return load_pipeline(source, load_plugins()).datasets["big"]


def both(ds: Dataset, base: Path) -> tuple[Any, Any, RecordStream]:
    """The dataset prepared from rows read whole, and from rows streamed (consumed)."""
    whole = prepare(ds, load_records(ds, base, 3), base, 3)
    stream = stream_records(ds, base, 3)
    return whole, prepare(ds, stream, base, 3, consume=True), stream


def test_streamed_json_lines_give_the_in_memory_rows_fingerprint_and_tokens(
        tmp_path: Path) -> None:
    rows = big_rows(3000, tmp_path / "gen.jsonl")
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    lines[11] = "not json"
    lines[1200] = json.dumps({"instruction": "no answer"})  # the format refuses it
    (tmp_path / "rows.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    ds = dataset(tmp_path, "json", "rows.jsonl", eval_fraction=0.05, on_bad_rows="skip")

    whole, streamed, stream = both(ds, tmp_path)
    assert stream.count == 2999 and streamed.fingerprint["rows"] == 2999
    assert streamed.fingerprint == whole.fingerprint  # so existing caches stay valid
    assert sum(streamed.skipped.values()) == 2 and streamed.skipped == whole.skipped
    assert streamed.warnings == whole.warnings
    assert streamed.train == whole.train and streamed.eval == whole.eval  # order too
    assert streamed.train_origins == whole.train_origins
    assert streamed.eval_origins == whole.eval_origins
    with pytest.raises(RuntimeError, match="read once"):
        list(stream)

    tokenizer = make_tiny_tokenizer()
    plain = tokenize_records(tokenizer, list(whole.train), 128, skip_empty=True)
    flowed = tokenize_records(tokenizer, streamed.train, 128, skip_empty=True)
    assert plain.truncated > 0 and len(flowed.rows) > 2000
    assert flowed == plain  # input_ids and labels, token for token, and every count

    # A limit stops formatting, not reading: what the fingerprint counts is unchanged.
    limited = dataset(tmp_path, "json", "rows.jsonl", limit=500, on_bad_rows="skip")
    whole, streamed, _ = both(limited, tmp_path)
    assert streamed.fingerprint == whole.fingerprint and len(streamed.train) == 500
    assert streamed.train == whole.train


def test_streamed_json_arrays_csv_parquet_and_eval_path_are_read_as_whole(
        tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = big_rows(600, tmp_path / "gen.jsonl")
    (tmp_path / "rows.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    with (tmp_path / "rows.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, ["instruction", "input", "output"])
        writer.writeheader()
        writer.writerows(rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet", row_group_size=128)
    (tmp_path / "held.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:40]),
                                         encoding="utf-8")
    split = {"eval_fraction": 0.1}
    cases = [("json", "rows.json", split), ("csv", "rows.csv", split),
             ("parquet", "rows.parquet", split), ("json", "gen.jsonl", {"eval_path": "held.jsonl"})]
    for loader, path, options in cases:
        ds = dataset(tmp_path, loader, path, **options)
        whole, streamed, stream = both(ds, tmp_path)
        assert stream.count == 600, (loader, path)
        assert streamed.fingerprint == whole.fingerprint, (loader, path)
        assert streamed.train == whole.train and streamed.eval == whole.eval, (loader, path)
        assert streamed.train_origins == whole.train_origins, (loader, path)
    assert len(streamed.eval) == 40 and streamed.fingerprint["eval_rows_read"] == 40
    assert streamed.eval_origins[0] == f"{tmp_path / 'held.jsonl'}:1"
    # Inspect's counts on raw rows are taken as the rows stream past: the same as on a list.
    stream = stream_records(ds, tmp_path, 3)
    seen: list[dict[str, Any]] = []
    stream.watchers.append(seen.append)
    prepare(ds, stream, tmp_path, 3, consume=True)
    assert len(seen) == 600 and empty_fields(seen) == empty_fields(rows)


class ListLoader(ftp.DataLoader):
    """Rows from a fixed list: a third-party loader that only returns a list."""

    name = "fixed_list"

    class Config(ftp.StrictConfig):
        """Options of fixed_list."""

        rows: int = 40
        fail_at: int | None = None

    config: Config

    def load(self, ctx: ftp.LoadContext) -> list[dict[str, Any]]:
        """The rows (each with its origin)."""
        return [ctx.origin({"instruction": f"say {i}", "input": "", "output": f"{i}"},
                           f"fixed#{i}") for i in range(self.config.rows)]


class BrokenStream(ListLoader):
    """Yields rows, then fails with its own bug."""

    name = "broken_stream"

    def rows(self, ctx: ftp.LoadContext) -> Any:
        """The rows until ``fail_at``."""
        for i, row in enumerate(self.load(ctx)):
            if i == self.config.fail_at:
                raise KeyError("cursor")
            yield row


class ThirdPartyLoaders:
    """The plugin that registers them."""

    @ftp.hookimpl
    def ftp_data_loaders(self) -> list[type]:
        return [ListLoader, BrokenStream]


def test_a_loader_returning_a_list_still_trains_and_a_loader_bug_is_named(
        tiny_model: Path, tmp_path: Path) -> None:
    def text(loader: str, **options: Any) -> str:
        return (tiny_pipeline(tmp_path / "p.toml", tiny_model,
                              data_section("d", loader=loader, format="alpaca", **options),
                              stage_section("sft", "d", max_steps=1, max_length=32))
                .read_text(encoding="utf-8"))

    done = run_pipeline(text("fixed_list"), tmp_path / "list", plugins=[ThirdPartyLoaders()])
    data = json.loads((done.run_dir / "data.json").read_text())["d"]
    assert data["rows"] == 40 and data["train_rows"] == 40
    ds = load_pipeline(tmp_path / "p.toml", plugin_set(ThirdPartyLoaders())).datasets["d"]
    assert data["records_sha256"] == prepare(ds, load_records(ds, tmp_path, 7), tmp_path,
                                             7).fingerprint["records_sha256"]

    with pytest.raises(FtpError) as failed:
        run_pipeline(text("broken_stream", fail_at=25), tmp_path / "broken",
                     plugins=[ThirdPartyLoaders()])
    first = str(failed.value).splitlines()[0]  # then the runner's hint on resuming
    assert first == ("load data 'd' [data loader 'broken_stream', plugin "
                     "'ThirdPartyLoaders']: KeyError: 'cursor'")
    # A bad row deep in a streamed file is the loader's, though formatting pulls it.
    lines = [json.dumps({"instruction": f"q{i}", "input": "", "output": "a"}) for i in range(60)]
    lines[44] = "{not json"
    (tmp_path / "rows.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(FtpError) as failed:
        run_pipeline(text("json", path=str(tmp_path / "rows.jsonl")), tmp_path / "bad")
    assert str(failed.value).startswith(
        f"load data 'd' [data loader 'json', plugin 'data']: {tmp_path / 'rows.jsonl'}:45: "
        "invalid JSON")
    status = json.loads((tmp_path / "bad" / "run" / "run.json").read_text())
    assert status["failed_step"] == "load data 'd'"


def test_near_duplicate_search_stops_at_its_budget_and_the_report_says_so(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from ftp.datacheck import dedup
    from ftp.datacheck import inspect as inspect_module

    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "nova"]  # most 5-grams shared by every text
    texts = [" ".join(rng.choice(words) for _ in range(40)) for _ in range(150)]
    texts += [t + " fox" for t in texts[:10]]  # ten true near copies
    whole = dedup.near_duplicates(texts)
    assert not whole.capped and len(whole) >= 10
    monkeypatch.setattr(dedup, "MAX_CANDIDATES", 200)
    capped = dedup.near_duplicates(texts)
    assert capped.capped >= 200
    assert {(p.first, p.second) for p in capped} <= {(p.first, p.second) for p in whole}
    names = [f"train {i}" for i in range(len(texts))]
    result = inspect_module.duplicates(texts, names)
    assert result["near_capped"] == capped.capped
    line = inspect_module.summary_lines({
        "dataset": "d", "format": "alpaca", "shape": "conversational", "rows_read": 160,
        "rows_skipped": 0, "skipped_reasons": {}, "train_rows": 160, "eval_rows": 0,
        "empty_fields": {}, "duplicates": result, "labels": None, "warnings": [],
        "unfinished_conversations": None, "untrained_turns": {"turns": 0, "rows": 0},
        "tokens": {"lengths": {}, "total": 0, "how": "", "truncated": None, "dropped": None,
                   "max_length": None}})[3]
    assert f"near: at least; the search stopped after {capped.capped:,} candidate pairs" in line
