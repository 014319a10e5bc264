"""``ftp data inspect`` on small real files with known duplicates, leakage and empty fields."""

import json

import pytest
from click.testing import CliRunner

from ftp.cli import cli
from ftp.datacheck.dedup import jaccard, near_duplicates, normalise, shingles
from ftp.testing import write_pipeline
from ftp_builtin.formats.chat import Alpaca

WATER = ("Water evaporates from oceans and lakes, condenses into clouds, falls as rain or snow "
         "and flows back to the sea through rivers and ground water.")
ROWS = [
    # Held out (shuffle = false, eval_fraction = 0.2: the first 2 good rows).
    {"instruction": "Explain photosynthesis in plants.", "input": "",
     "output": "Plants turn light, water and carbon dioxide into sugar and oxygen."},
    {"instruction": "Describe the water cycle.", "input": "", "output": WATER},
    # Training rows.
    {"instruction": "EXPLAIN  photosynthesis in plants.", "input": "",  # exact (normalised)
     "output": "Plants turn light, water and carbon dioxide into sugar and oxygen."},
    {"instruction": "Describe the water cycle.", "input": "",  # near duplicate of row 1
     "output": WATER.replace("flows back", "runs back")},
    {"instruction": "Name three primary colours.", "input": "", "output": "Red, yellow, blue."},
    {"instruction": "Name three primary colours.", "input": "", "output": "Red, yellow, blue."},
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour."},
    {"instruction": "Write a haiku about autumn.", "input": "",
     "output": "Leaves drift on cold wind, the maple burns red, geese call from the south."},
    {"instruction": "What is the boiling point of water?", "input": "  ",
     "output": "One hundred degrees Celsius at sea level."},
    {"instruction": "List two mammals.", "input": "", "output": "Dogs and whales."},
    {"instruction": "A row without an answer.", "input": "context"},  # bad: skipped
]
CHAT = [
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"},
                  {"role": "user", "content": "Still there?"}]},  # no final answer
    {"messages": [{"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Ciao"}]},
]
MAX_LENGTH = 40


@pytest.fixture
def pipeline(tmp_path, tiny_model):
    (tmp_path / "alpaca.json").write_text(json.dumps(ROWS))
    (tmp_path / "chat.json").write_text(json.dumps(CHAT))
    (tmp_path / "reviews.csv").write_text(
        "text,label\na fine film,positive\na dull film,negative\ngreat fun,positive\n"
        "loved it,positive\n")
    return write_pipeline(tmp_path / "p.toml", f"""
        [pipeline]
        name = "inspect"
        output_dir = "run"
        [model]
        path = "{tiny_model}"
        [data.alpaca]
        loader = "json"
        path = "alpaca.json"
        format = "alpaca"
        shuffle = false
        eval_fraction = 0.2
        [data.chat]
        loader = "json"
        path = "chat.json"
        format = "messages"
        [data.reviews]
        loader = "csv"
        path = "reviews.csv"
        format = "classification"
        [[stages]]
        method = "sft"
        data = "alpaca"
        max_length = {MAX_LENGTH}
        """)


@pytest.fixture
def report(pipeline):
    result = CliRunner().invoke(cli, ["data", "inspect", str(pipeline)])
    assert result.exit_code == 0, result.output
    folder = pipeline.parent / "run.data-inspect"  # beside the pipeline's run folder
    data = json.loads((folder / "report.json").read_text())
    return result.output, folder, {d["dataset"]: d for d in data["datasets"]}


def test_rows_skips_empty_fields_and_duplicates(report):
    out, _, datasets = report
    d = datasets["alpaca"]
    assert (d["rows_read"], d["rows_skipped"], d["train_rows"], d["eval_rows"]) == (11, 1, 8, 2)
    assert d["skipped_reasons"] == {"missing field 'output'": 1}
    assert d["empty_fields"] == {"input": 9}
    dup = d["duplicates"]
    assert (dup["exact_rows"], dup["exact_groups"], dup["near_pairs"]) == (2, 2, 1)
    assert dup["near_examples"][0]["rows"] == ["train 1", "eval 1"]
    assert sorted(x["rows"] for x in dup["exact_examples"]) == [["train 0", "eval 0"],
                                                                ["train 2", "train 3"]]
    assert "rows: 11 read, 1 skipped (1 missing field 'output'); 8 train / 2 held out" in out
    assert "duplicates: 2 exact rows (2 groups), 1 near-duplicate pairs" in out


def test_leakage_between_train_and_held_out(report):
    out, _, datasets = report
    leak = datasets["alpaca"]["leakage"]["train/eval"]
    assert (leak["held_out_rows"], leak["exact"], leak["near"]) == (2, 1, 1)
    assert "train/eval leakage: 1 exact, 1 near of 2 held-out rows" in out


def test_token_lengths_truncation_and_histogram(report, tiny_model):
    from transformers import AutoTokenizer

    _, folder, datasets = report
    tok = AutoTokenizer.from_pretrained(tiny_model)
    good = [r for r in ROWS if "output" in r]
    lengths = [len(tok.apply_chat_template(Alpaca().convert(r)["messages"], tokenize=True)
                   ["input_ids"]) for r in good]
    tokens = datasets["alpaca"]["tokens"]
    assert tokens["max_length"] == MAX_LENGTH
    assert tokens["truncated"] == sum(n > MAX_LENGTH for n in lengths) > 0
    assert tokens["lengths"]["max"] == max(lengths)
    assert tokens["total"] == sum(lengths)
    png = folder / tokens["histogram"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![token lengths](lengths-alpaca.png)" in (folder / "report.md").read_text()


def test_unfinished_conversations_and_labels(report):
    out, _, datasets = report
    chat = datasets["chat"]
    assert chat["unfinished_conversations"] == 1
    assert chat["rows_skipped"] == 1  # the format refuses it; inspection goes on
    assert chat["tokens"]["how"] == "as stage 'sft' tokenizes"
    assert "conversations not ending with an assistant turn: 1" in out
    reviews = datasets["reviews"]
    assert reviews["labels"] == {"negative": 1, "positive": 3}
    assert reviews["tokens"]["truncated"] is None  # no stage trains a classifier here
    assert "labels: negative 1, positive 3" in out


def test_near_duplicates_need_similar_text():
    texts = [WATER, WATER.replace("flows back", "runs back"), "Something else entirely, "
             "about cooking pasta in salted water for eleven minutes.", normalise(WATER).upper()]
    pairs = near_duplicates(texts)
    assert [(p.first, p.second) for p in pairs] == [(0, 1), (1, 3)]
    assert all(0.8 <= p.similarity < 1 for p in pairs)


def test_shingle_arrays_measure_what_shingle_sets_measure():
    import zlib

    texts = [WATER, WATER.replace("flows back", "runs back"), WATER[:40], "abc", "",
             "Ünïcödé text, twice: Ünïcödé text"]

    def as_set(text: str) -> set[int]:  # the 5-grams' CRC32s as a plain set
        norm = normalise(text).encode("utf-8")
        if len(norm) <= 5:
            return {zlib.crc32(norm)}
        return {zlib.crc32(norm[i:i + 5]) for i in range(len(norm) - 4)}

    for a in texts:
        assert shingles(a).tolist() == sorted(as_set(a))
        for b in texts:
            sa, sb = as_set(a), as_set(b)
            assert jaccard(shingles(a), shingles(b)) == len(sa & sb) / len(sa | sb)


ASKED = ("Our team keeps a shared spreadsheet of customer orders with dates, amounts and "
         "regions. How can I total the amounts per region for the last quarter?")


def pair(prompt: str, chosen: str, rejected: str) -> dict:
    return {"conversations": [{"from": "human", "value": prompt}],
            "chosen": {"from": "gpt", "value": chosen},
            "rejected": {"from": "gpt", "value": rejected}}


def test_prompt_leakage_in_preference_data(tmp_path, tiny_model):
    """A held-out pair whose prompt was trained on with other answers leaks; rows differ."""
    rows = [
        # Held out (shuffle = false, eval_fraction = 0.4: the first 2 rows).
        pair(ASKED, "Use a pivot table with region as rows and the sum of amounts.",
             "Add them up by hand."),
        pair("Write a limerick about a cat who loves the rain and hates the sun.",
             "There once was a cat in the rain...", "Cats are animals."),
        # Training: the first held-out prompt again, with other answers; the second, nearly.
        pair(ASKED, "Filter the dates to the quarter, then SUMIF over the region column "
             "of the sheet, one formula per region.", "Spreadsheets cannot do that."),
        pair("Write a limerick about a cat who loves the rain and hates the sun!",
             "A tabby who danced in the drizzle, found sunshine a terrible fizzle...",
             "No."),
        pair("Name a prime number.", "Seven.", "Eight."),
    ]
    (tmp_path / "pairs.json").write_text(json.dumps(rows))
    path = write_pipeline(tmp_path / "p.toml", f"""
        [pipeline]
        name = "leaky"
        output_dir = "run"
        [model]
        path = "{tiny_model}"
        [data.pairs]
        loader = "json"
        path = "pairs.json"
        format = "sharegpt_preference"
        shuffle = false
        eval_fraction = 0.4
        [[stages]]
        method = "dpo"
        data = "pairs"
        [[evaluate]]
        evaluator = "preference"
        data = "pairs"
        """)
    result = CliRunner().invoke(cli, ["data", "inspect", str(path)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run.data-inspect" / "report.json").read_text())
    leak = report["datasets"][0]["leakage"]
    assert (leak["train/eval"]["exact"], leak["train/eval"]["near"]) == (0, 0)
    prompts = leak["train/eval prompts"]
    assert (prompts["held_out_rows"], prompts["exact"], prompts["near"]) == (2, 1, 1)
    assert prompts["examples"][0].startswith("our team keeps a shared spreadsheet")
    assert ("train/eval prompt leakage: 1 exact, 1 near of 2 held-out prompts"
            in result.output)
    assert "Held-out prompts also prompting training rows:" in (
        tmp_path / "run.data-inspect" / "report.md").read_text()
