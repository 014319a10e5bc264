"""The GRPO, ORPO and reward-model examples validate, and their generated data (arithmetic,
sentiment pairs) is what its generator writes."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ftp.testing import run_cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.mark.parametrize("name", ["grpo", "orpo", "reward"])
def test_example_validates(name):
    result = run_cli("validate", str(EXAMPLES / f"{name}.toml"))
    assert result.exit_code == 0, result.output


def test_arithmetic_data_is_what_the_generator_writes(tmp_path):
    script = EXAMPLES / "data" / "make_arithmetic.py"
    copy = tmp_path / script.name
    copy.write_text(script.read_text(encoding="utf-8"), encoding="utf-8")
    subprocess.run([sys.executable, str(copy)], check=True, capture_output=True, timeout=60)
    for name in ("arithmetic_train.jsonl", "arithmetic_eval.jsonl"):
        assert (tmp_path / name).read_text() == (EXAMPLES / "data" / name).read_text(), name
    train = {line for line in (tmp_path / "arithmetic_train.jsonl").read_text().splitlines()}
    held_out = set((tmp_path / "arithmetic_eval.jsonl").read_text().splitlines())
    assert len(train) == 400 and len(held_out) == 60 and not train & held_out


def test_sentiment_pairs_are_what_the_generator_writes(tmp_path):
    script = EXAMPLES / "data" / "make_sentiment_pairs.py"
    for name in (script.name, "sst2_train.csv", "sst2_eval.csv"):
        (tmp_path / name).write_bytes((EXAMPLES / "data" / name).read_bytes())
    subprocess.run([sys.executable, str(tmp_path / script.name)], check=True,
                   capture_output=True, timeout=60)
    pairs = {}
    for split in ("train", "eval"):
        name = f"sentiment_pairs_{split}.jsonl"
        assert (tmp_path / name).read_text() == (EXAMPLES / "data" / name).read_text(), name
        pairs[split] = [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
    assert len(pairs["train"]) == 400 and len(pairs["eval"]) == 100
    labels = {}
    for split in ("train", "eval"):
        with (EXAMPLES / "data" / f"sst2_{split}.csv").open(newline="") as f:
            labels.update({r["text"]: r["label"] for r in csv.DictReader(f)})
    phrases = {split: [p[k] for p in rows for k in ("chosen", "rejected")]
               for split, rows in pairs.items()}
    # chosen is always a positive phrase, rejected a negative one; no phrase used twice or in
    # both splits
    assert all(labels[p["chosen"]] == "positive" and labels[p["rejected"]] == "negative"
               for rows in pairs.values() for p in rows)
    assert len(set(phrases["train"])) == 800 and len(set(phrases["eval"])) == 200
    assert not set(phrases["train"]) & set(phrases["eval"])
