"""``ftp plan`` and ``ftp run --preflight``: one probe per stage, on the longest batch its
method keeps, through the real CLI on tiny models.

The ORPO and reward stages are the cases where the longest rows are exactly the ones the
method leaves out (a prompt that fills max_length; a pair over max_length): the probe must
measure rows the method trains on, not fail. The cpt stage's estimate must be made at its
block size, not at the length of its (long) documents.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ftp.testing import make_tiny_causal_lm, run_ftp, write_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model, instruction data, preference pairs (the longest ones unusable at
    max_length 64) and long documents."""
    root = tmp_path_factory.mktemp("plan")
    make_tiny_causal_lm(root / "model")
    rows = [{"instruction": f"Question {i}: " + "why " * (i % 6), "input": "",
             "output": f"Answer {i}. " + "yes " * (i % 4 * 3)} for i in range(30)]
    (root / "sft.json").write_text(json.dumps(rows), encoding="utf-8")
    pairs = []
    for i in range(24):
        # Every fourth pair's prompt alone is far over max_length = 64: ORPO leaves it out,
        # the reward trainer too; these are the longest rows by any plain count.
        prompt = ("tell me " * 60) if i % 4 == 0 else f"Say hello {i} " + "please " * (i % 5)
        pairs.append({"prompt": prompt, "chosen": "Hello there friend. " * (1 + i % 3),
                      "rejected": "No."})
    (root / "pairs.json").write_text(json.dumps(pairs), encoding="utf-8")
    docs = ["The quick brown fox jumps over the lazy dog. " * 60 for _ in range(4)]
    (root / "wiki.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    write_pipeline(root / "sft.toml", """
        [pipeline]
        name = "tiny-sft"
        seed = 1

        [model]
        path = "model"

        [data.d]
        loader = "json"
        path = "sft.json"
        format = "alpaca"
        eval_fraction = 0.2

        [[stages]]
        method = "sft"
        data = "d"
        adapter = { type = "lora", r = 4, alpha = 8 }
        epochs = 2
        batch_size = 4
        max_length = 48
        """)
    write_pipeline(root / "dropping.toml", """
        [pipeline]
        name = "tiny-dropping"
        seed = 1

        [model]
        path = "model"

        [data.pairs]
        loader = "json"
        path = "pairs.json"
        format = "preference"

        [data.wiki]
        loader = "text"
        path = "wiki.txt"
        split = "line"
        format = "text"

        [[stages]]
        name = "cpt"
        method = "cpt"
        data = "wiki"
        batch_size = 2
        block_size = 32
        epochs = 1

        [[stages]]
        name = "orpo"
        method = "orpo"
        data = "pairs"
        adapter = { type = "lora", r = 4, alpha = 8 }
        batch_size = 2
        epochs = 1
        max_length = 64

        [[stages]]
        name = "reward"
        method = "reward"
        data = "pairs"
        adapter = { type = "lora", r = 4, alpha = 8 }
        batch_size = 2
        epochs = 1
        max_length = 64

        """)
    return root


def _plan(folder: Path, *args: str) -> dict:
    result = run_ftp("plan", *args, "--json", cwd=folder)
    assert "Traceback" not in result.stderr, result.stderr
    return {"rc": result.returncode, "stderr": result.stderr, **json.loads(result.stdout)}


def test_plan_probes_a_stage_and_gives_its_eta(folder: Path) -> None:
    plan = _plan(folder, "sft.toml")
    assert plan["rc"] == 0, plan["stderr"]
    (stage,) = plan["stages"]
    assert stage["probe"]["ok"], stage["probe"]
    # 24 training rows, batch 4, 2 epochs; the longest batch's rows, as sft tokenizes them.
    assert stage["rows"] == 24 and stage["steps"] == 12
    assert 16 < stage["setting"]["sequence"] <= 48
    assert stage["measured_bytes"] > 0 and stage["seconds_per_step"] > 0
    assert plan["eta_seconds"] == pytest.approx(12 * stage["seconds_per_step"])
    assert stage["estimate"]["total"] > 0 and plan["fits"]


def test_the_terminal_table_and_a_stage_over_budget_exit_1(folder: Path) -> None:
    result = run_ftp("plan", "sft.toml", "--memory-budget", "0.0001", cwd=folder)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "stage  method" in result.stdout and "ETA for training" in result.stdout
    assert "warning: stage 'sft' will not fit" in result.stderr


def test_preflight_stops_before_training_and_runs_when_it_fits(folder: Path) -> None:
    refused = run_ftp("run", "sft.toml", "--preflight", "--memory-budget", "0.0001",
                      "-o", "refused", cwd=folder)
    assert refused.returncode == 1
    assert "nothing was trained" in refused.stderr
    assert not (folder / "refused").exists()
    ran = run_ftp("run", "sft.toml", "--preflight", "-o", "ran",
                  "--set", "stages[0].max_steps=1", cwd=folder)
    assert ran.returncode == 0, ran.stderr
    assert "ETA for training" in ran.stdout and (folder / "ran" / "model").is_dir()


def test_methods_that_drop_the_longest_rows_are_probed_on_rows_they_keep(folder: Path) -> None:
    plan = _plan(folder, "dropping.toml")
    assert plan["rc"] == 0, plan["stderr"]
    cpt, orpo, reward = plan["stages"]
    for stage in (orpo, reward):
        assert stage["probe"]["ok"], stage["probe"]
        # Ranked among rows the method keeps: the first batch tried is one it trains on.
        assert stage["probe"]["tried"] == []
        assert stage["setting"]["sequence"] <= 64
        assert stage["setting"]["sequences_per_row"] == 2
    # The packed stage is estimated at its block size, not its 600-token documents.
    assert cpt["probe"]["ok"], cpt["probe"]
    assert cpt["setting"]["sequence"] == 32
    # Its rows are the 32-token blocks the documents are packed into, two per step.
    assert cpt["rows"] > 40 and cpt["steps"] == math.ceil(cpt["rows"] / 2)


def test_grpo_is_probed_with_its_completions(folder: Path) -> None:
    (folder / "sums.json").write_text(json.dumps(
        [{"question": f"What is {i} + {i}?"} for i in range(8)]), encoding="utf-8")
    write_pipeline(folder / "grpo.toml", """
        [pipeline]
        name = "tiny-grpo"
        seed = 7

        [model]
        path = "model"

        [data.sums]
        loader = "json"
        path = "sums.json"
        format = "prompt"
        format_options = { prompt = "question" }

        [[stages]]
        method = "grpo"
        data = "sums"
        epochs = 1
        batch_size = 4
        num_generations = 2
        max_completion_length = 8
        rewards = [{ reward = "regex", pattern = "[0-9]+" }]
        """)
    plan = _plan(folder, "grpo.toml")
    assert plan["rc"] == 0, plan["stderr"]
    (stage,) = plan["stages"]
    assert stage["probe"]["ok"], stage["probe"]
    # Each of the 8 prompts gets 2 completions, 4 per step; a row holds prompt + completion.
    assert stage["rows"] == 16 and stage["steps"] == 4
    assert stage["setting"]["sequence"] > 8


@pytest.mark.slow
def test_the_cpt_example_is_estimated_at_its_blocks_near_what_it_measures() -> None:
    """SmolLM2 on examples/cpt.toml: the estimate was once 28× the measured peak (it counted
    whole documents, not 256-token blocks)."""
    root = Path(__file__).resolve().parent.parent / "examples"
    plan = _plan(root, "cpt.toml")
    assert plan["rc"] == 0, plan["stderr"]
    (stage,) = plan["stages"]
    assert stage["setting"]["sequence"] == 256 and stage["steps"] == 12
    ratio = stage["estimate"]["total"] / stage["measured_bytes"]
    assert 0.6 < ratio < 1.4, (stage["estimate"], stage["measured_bytes"])
