"""The data path at scale gives what the in-memory path gives: streamed JSON Lines, row-by-row
digests, tokenization in forked processes written out a chunk at a time, tokens held in int32
arrays and read back as views of the cache's mapped files (into the trainer's dataset), and
`ftp data inspect`'s sampling (said so)."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from array import array
from pathlib import Path
from typing import Any

import pytest

from ftp import IGNORE_INDEX, LoadContext
from ftp.cache import RowsWriter, load_rows, save_rows
from ftp.datacheck import inspect as inspect_module
from ftp.hashing import digest
from ftp.testing import make_tiny_tokenizer, run_cli, run_pipeline, write_pipeline
from ftp.tokenrows import TokenRows
from ftp_builtin import tokenize_parallel
from ftp_builtin.data import JsonLoader
from ftp_builtin.tokenize import conversation, tokenize_records
from ftp_builtin.tokenize_parallel import cores, processes_for, tokenize_into

pytestmark = pytest.mark.usefixtures("one_thread")

WORDS = ["alpha", "beta", "gamma", "delta", "nova", "fox", "dog", "hello", "world", "who",
         "are", "you", "name"]


def generated(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` alpaca rows of varied length, some repeated, some with long prompts."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        if i % 25 == 24:
            rows.append(dict(rows[rng.randrange(len(rows))]))  # an exact duplicate
            continue
        words = rng.randint(3, 60 if i % 7 else 200)  # every 7th prompt is long
        rows.append({"instruction": " ".join(rng.choice(WORDS) for _ in range(words)),
                     "input": "ünïcödé ✓" if i % 5 == 0 else "",
                     "output": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30)))})
    return rows


def conversations(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"messages": [{"role": "user", "content": r["instruction"] + r["input"]},
                          {"role": "assistant", "content": r["output"]}]} for r in rows]


def test_streamed_json_lines_are_the_rows_read_whole(tmp_path: Path) -> None:
    rows = generated(300)
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    lines[10] = "not json"
    lines[20] = "[1, 2]"
    raw = ("\ufeff" + "\r\n".join(lines[:50]) + "\n\n" + "\n".join(lines[50:]) + "\n")
    data = raw.encode("utf-8").replace(b"\xc3\xbc", b"\xff", 1)  # one undecodable row
    path = tmp_path / "rows.jsonl"
    path.write_bytes(data)

    def read(streamed: bool) -> tuple[list[Any], dict[str, int], list[str | None]]:
        ctx = LoadContext(dataset="d", base_dir=tmp_path, on_bad_rows="skip")
        if streamed:
            got = JsonLoader(JsonLoader.Config(path="rows.jsonl")).load(ctx)
        else:  # the whole file in memory, split at newlines: what the loader did before
            text = data.decode("utf-8-sig", errors="surrogateescape")
            got = list(JsonLoader._lines(ctx, text, path))
        return got, dict(ctx.skipped), [ctx.where(r) for r in got]

    streamed, whole = read(True), read(False)
    assert streamed == whole
    assert len(streamed[0]) == 297 and sum(streamed[1].values()) == 3
    assert streamed[2][0] == f"{path}:2" and streamed[2][-1] == f"{path}:301"


def test_a_list_is_digested_row_by_row_to_the_same_hash() -> None:
    rows = generated(200) + [{"n": 1.5, "t": (1, 2), "none": None, "p": Path("x")}]
    whole = json.dumps(rows, sort_keys=True, ensure_ascii=False, default=str)
    assert digest(rows) == hashlib.sha256(whole.encode("utf-8")).hexdigest()
    assert digest([]) == hashlib.sha256(b"[]").hexdigest()
    assert digest(tuple(rows[:3])) == digest(rows[:3])


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return make_tiny_tokenizer()


def written(tmp_path: Path, name: str, tokenizer: Any, records: list[dict[str, Any]],
            max_length: int) -> tuple[Any, TokenRows]:
    """`tokenize_into` a fresh folder: its counts, and the rows read back from the files."""
    folder = tmp_path / name
    folder.mkdir()
    writer = RowsWriter(folder)
    counts = tokenize_into(writer, tokenizer, records, max_length)
    writer.close()
    assert not list(folder.glob("part-*"))  # the processes' parts are joined and gone
    return counts, load_rows(folder)


def test_forked_chunked_tokenization_writes_the_tokens_of_one_process(
        tokenizer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records = conversations(generated(400))
    one = tokenize_records(tokenizer, records, 96, skip_empty=True)
    assert one.truncated and one.dropped  # the long prompts are cut, some before the answer
    monkeypatch.setattr(tokenize_parallel, "CHUNK_ROWS", 37)  # parts end mid-chunk
    for label, per_process in (("chunked", "1000000"), ("forked", "100")):
        monkeypatch.setenv("FTP_TOKENIZE_ROWS_PER_PROCESS", per_process)
        if label == "forked" and cores() > 1:  # one core tokenizes in one process anyway
            assert processes_for(len(records)) == min(cores(), 4)
        counts, rows = written(tmp_path, label, tokenizer, records, 96)
        assert rows.mapped and rows == one.rows
        assert not len(counts.rows) and counts.counts() == one.counts()
        assert counts.empty == one.empty  # the same rows named, by index in the whole list


def in_memory_rows(tokenizer: Any, records: list[dict[str, Any]], max_length: int
                   ) -> list[dict[str, list[int]]]:
    """The path before arrays: each conversation's Python lists, cut at ``max_length``, rows
    with no token to learn from left out."""
    out = []
    for record in records:
        row = {k: v[:max_length] for k, v in conversation(tokenizer, record["messages"]).items()}
        if any(label != IGNORE_INDEX for label in row["labels"][1:]):
            out.append(row)
    return out


def test_the_array_path_gives_the_in_memory_tokens_token_for_token(
        tokenizer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datasets import Dataset
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in generated(3000)), encoding="utf-8")
    ctx = LoadContext(dataset="d", base_dir=tmp_path, on_bad_rows="skip")
    records = conversations(JsonLoader(JsonLoader.Config(path="rows.jsonl")).load(ctx))
    reference = in_memory_rows(tokenizer, records, 96)
    assert 0 < len(reference) < len(records)  # some rows lose their answer to the cut

    monkeypatch.setenv("FTP_TOKENIZE_ROWS_PER_PROCESS", "700")
    tokenized, loaded = written(tmp_path, "entry", tokenizer, records, 96)
    assert tokenized.tokens == sum(len(r["input_ids"]) for r in reference)
    # The entry holds each column's ids end to end, and where each row starts.
    layout = json.loads((tmp_path / "entry" / "columns.json").read_text(encoding="utf-8"))
    assert layout["rows"] == len(reference)
    for name, col in layout["columns"].items():
        ids = array("i", [i for r in reference for i in r[name]])
        assert (tmp_path / "entry" / f"{col['file']}.values").read_bytes() == ids.tobytes()
        starts = array("q", [0])
        for r in reference:
            starts.append(starts[-1] + len(r[name]))
        assert (tmp_path / "entry" / f"{col['file']}.starts").read_bytes() == starts.tobytes()
    assert isinstance(loaded, TokenRows) and loaded.mapped and loaded == reference
    # Written from a list of dicts: the same entry.
    save_rows(reference, tmp_path)
    assert load_rows(tmp_path) == loaded

    # The trainer's dataset and batches: Arrow columns built from the arrays, as from lists.
    dataset = loaded.dataset()
    assert dataset.to_list() == Dataset.from_list(reference).to_list() == reference
    collate = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id,
                                              padding_free=True)
    for start in (0, len(reference) - 8):
        ours = collate([dataset[i] for i in range(start, start + 8)])
        theirs = collate(reference[start:start + 8])
        assert ours.keys() == theirs.keys()
        for key, value in ours.items():  # tensors, and the collator's counts (ints)
            assert value.equal(theirs[key]) if hasattr(value, "equal") else value == theirs[key]


def test_mapped_rows_outlive_their_entry_and_are_copied_before_they_grow(tmp_path: Path) -> None:
    rows = [{"input_ids": list(range(i, i + 5 + i % 3)), "label": i} for i in range(40)]
    entry = tmp_path / "entry"
    entry.mkdir()
    save_rows(rows, entry)
    loaded = load_rows(entry)
    assert loaded.mapped and loaded == rows
    shutil.rmtree(entry)  # what `ftp cache clear` does while a run trains
    assert loaded == rows and loaded.dataset().to_list() == rows
    loaded.append(rows[0])  # grows into arrays of its own; the views are left alone
    loaded.extend(TokenRows(rows[1:3]))
    assert not loaded.mapped and loaded == rows + rows[:3]


def test_token_rows_hold_four_bytes_a_token_and_join_parts_in_order() -> None:
    rows = [{"input_ids": list(range(i, i + 300 + i % 7)), "labels": [IGNORE_INDEX] * 3
             + list(range(i + 3, i + 300 + i % 7)), "label": i} for i in range(200)]
    held = TokenRows(rows)
    tokens = sum(len(r["input_ids"]) for r in rows)
    assert len(held.values("input_ids")) == tokens
    assert held.values("input_ids").itemsize == 4 and not held.is_sequence("label")
    joined = TokenRows(rows[:50])
    joined.extend(TokenRows(rows[50:120]))
    joined.extend(rows[120:])
    assert joined == held == rows and held[-1] == rows[-1] and held[3:5] == rows[3:5]
    assert held.dataset().to_list() == rows
    with pytest.raises(ValueError, match="differ"):
        held.append({"input_ids": [1]})


def pipeline_text(model: Path, data: Path) -> str:
    return f"""
        [pipeline]
        name = "scale"
        seed = 3

        [model]
        path = {json.dumps(str(model))}

        [data.big]
        loader = "json"
        path = {json.dumps(str(data))}
        format = "alpaca"
        eval_fraction = 0.1
        on_bad_rows = "skip"

        [[stages]]
        method = "sft"
        data = "big"
        max_steps = 1
        batch_size = 4
        max_length = 96
        logging_steps = 1
    """


def test_a_run_on_the_streamed_forked_path_trains_on_the_same_tokens(
        tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in generated(300)), encoding="utf-8")
    runs = {}
    for label, per_process in (("one", "1000000"), ("forked", "50")):
        monkeypatch.setenv("FTP_TOKENIZE_ROWS_PER_PROCESS", per_process)
        monkeypatch.setenv("FTP_TOKENIZED_CACHE_DIR", str(tmp_path / f"cache-{label}"))
        runs[label] = run_pipeline(pipeline_text(tiny_model, data), tmp_path / label)
    counts = [json.loads((r.run_dir / "data.json").read_text())["big"]["tokenized"]
              for r in runs.values()]
    assert counts[0] == counts[1] and counts[0]["sft"]["truncated"] > 0
    losses = [[json.loads(line).get("loss") for line in
               (r.run_dir / "metrics.jsonl").read_text().splitlines()
               if '"loss"' in line] for r in runs.values()]
    assert losses[0] and losses[0] == losses[1]


def test_inspect_counts_exactly_and_estimates_from_a_sample_it_names(
        tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "rows.jsonl"
    rows = generated(400)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    source = write_pipeline(tmp_path / "pipeline.toml", pipeline_text(tiny_model, data))
    reports = {}
    for label, sample in (("whole", 10**6), ("sampled", 100)):
        monkeypatch.setattr(inspect_module, "SAMPLE_ROWS", sample)
        out = tmp_path / f"report-{label}"
        result = run_cli("data", "inspect", str(source), "--out", str(out))
        assert result.exit_code == 0, result.output
        reports[label] = (json.loads((out / "report.json").read_text())["datasets"][0],
                          result.output)
    whole, sampled = reports["whole"][0], reports["sampled"][0]
    for key in ("rows_read", "rows_skipped", "train_rows", "eval_rows", "empty_fields"):
        assert sampled[key] == whole[key]
    for key in ("exact_rows", "exact_groups"):
        assert sampled["duplicates"][key] == whole["duplicates"][key] > 0
    assert sampled["leakage"]["train/eval"]["exact"] == whole["leakage"]["train/eval"]["exact"]
    assert "sampled" not in whole
    assert {k: sampled["sampled"][k] for k in ("rows", "of", "seed")} == \
        {"rows": 100, "of": 400, "seed": 3}
    assert "token lengths" in sampled["sampled"]["estimated"]
    assert sampled["tokens"]["sampled"] == 100
    assert sampled["tokens"]["total"] == pytest.approx(whole["tokens"]["total"], rel=0.25)
    assert "estimated from a seeded sample of 100 of 400 rows" in reports["sampled"][1]
