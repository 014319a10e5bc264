"""Where rows came from, held compactly (`ftp.origins.Origins`): the very strings loaders and
ftp make read back, in the split's order (the same shuffle as before), for every loader's
shape, through `prepare` and `combine`."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import pytest

from ftp.config import Dataset, load_pipeline
from ftp.data import combine, load_records, prepare, stream_records
from ftp.origins import Origins
from ftp.plugins import load_plugins
from ftp.testing import data_section, stage_section, tiny_pipeline

SHAPES = ["/data/rows.jsonl:1", "/data/rows.jsonl:120", "/data/rows.json[0]",
          "/data/rows.json:14 (item 3)", "/data/rows.csv:7", "/data/docs/a1.txt",
          "/data/docs/b.txt:12", "saved[2]", "org/set[train][41]", "data.big row 5",
          "data.big training row 0", "fixed#9", "x:007", "x:0", "", "42", "é ✓:3", "a\nb:4",
          "9999999999999999999999", "/data/rows.jsonl:1"]


def test_origins_read_back_the_strings_they_were_given() -> None:
    held = Origins.of(SHAPES)
    assert len(held) == len(SHAPES) and held == SHAPES and list(held) == SHAPES
    assert all(held[i] == SHAPES[i] for i in range(-len(SHAPES), len(SHAPES)))
    assert held[3:9] == SHAPES[3:9] and held[::-1] == SHAPES[::-1]
    with pytest.raises(IndexError):
        held[len(SHAPES)]
    picked = [19, 3, 0, 3, 13, 14, 17]
    taken = held.take(picked)
    assert taken == [SHAPES[i] for i in picked] and held == SHAPES
    taken.append("/data/rows.jsonl:5")  # a taken copy grows on its own
    assert taken[-1] == "/data/rows.jsonl:5" and len(held) == len(SHAPES)
    assert Origins().take([]) == [] and not Origins()
    # A file's lines: one text kept once, 12 bytes a row.
    lines = Origins.of(f"/data/rows.jsonl:{n}" for n in range(1, 10001))
    assert len(lines._texts) == 1 and not lines._others
    assert lines._which.itemsize + lines._numbers.itemsize == 12
    assert lines[9999] == "/data/rows.jsonl:10000"
    # Names that differ in more than their number fill the table only so far.
    names = [f"id-{i * 7919 % 10007}x-{i}" for i in range(5000)]
    varied = Origins.of(names)
    assert varied == names and len(varied._texts) == 4096 and len(varied._others) == 904


def dataset(tmp_path: Path, loader: str, path: str, **options: Any) -> Dataset:
    source = tiny_pipeline(tmp_path / f"{loader}.toml", "unused",
                           data_section("big", loader=loader, path=path, format="alpaca",
                                        **options),
                           stage_section("sft", "big"), seed=3)
    return load_pipeline(source, load_plugins()).datasets["big"]


def test_prepared_origins_are_the_loaders_strings_in_the_split_order(tmp_path: Path) -> None:
    rows = [{"instruction": f"q {i}", "input": "", "output": f"a {i}"} for i in range(230)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows),
                                         encoding="utf-8")
    (tmp_path / "rows.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    with (tmp_path / "rows.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, ["instruction", "input", "output"])
        writer.writeheader()
        writer.writerows(rows)
    prepared = []
    for loader, path in (("json", "rows.jsonl"), ("json", "rows.json"), ("csv", "rows.csv")):
        ds = dataset(tmp_path, loader, path, eval_fraction=0.1)
        records = load_records(ds, tmp_path, 3)
        assert all(isinstance(o, str) for o in records.origins)
        done = prepare(ds, records, tmp_path, 3)
        # The split's order is the shuffle a list of indices always had.
        order = list(range(230))
        random.Random(3).shuffle(order)
        assert isinstance(done.train_origins, Origins)
        assert done.eval_origins == [records.origins[i] for i in order[:23]]
        assert done.train_origins == [records.origins[i] for i in order[23:]], (loader, path)
        assert done.fingerprint["split_sha256"] == \
            prepare(ds, stream_records(ds, tmp_path, 3), tmp_path, 3).fingerprint["split_sha256"]
        prepared.append(done)
    assert prepared[0].train_origins[0].startswith(f"{tmp_path / 'rows.jsonl'}:")
    assert prepared[1].train_origins[0].startswith(f"{tmp_path / 'rows.json'}:")
    assert "(item " in prepared[1].train_origins[0]

    # A plain list of rows: named by index, as ftp names them.
    ds = dataset(tmp_path, "json", "rows.jsonl", shuffle=False)
    plain = prepare(ds, rows[:50], tmp_path, 3)
    assert plain.train_origins == [f"data.big row {i}" for i in range(50)]

    joined = combine("a+b", [prepared[0], plain], None, 3)
    assert joined.train_origins == [*prepared[0].train_origins, *plain.train_origins]
    assert joined.eval_origins == list(prepared[0].eval_origins)
