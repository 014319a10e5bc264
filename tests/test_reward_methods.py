"""``orpo``, ``simpo`` and ``reward`` through the CLI on the tiny model; the trained reward model
scored by the ``reward_model`` reward."""

import json
import math
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftp.cli import cli
from ftp.testing import data_section, run_ftp, stage_section, tiny_pipeline
from ftp_builtin.rewards.model import RewardModel

DATA = Path(__file__).parent / "data"

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def run(pipeline: Path, out: Path) -> Path:
    run_output(pipeline, out)
    return out


def run_output(pipeline: Path, out: Path) -> str:
    """What ``ftp run`` printed, after checking it succeeded."""
    env = dict(os.environ)
    try:
        result = CliRunner().invoke(cli, ["run", str(pipeline), "--output-dir", str(out)])
    finally:  # `ftp run` quiets libraries through the environment; keep that to the run
        os.environ.clear()
        os.environ.update(env)
    assert result.exit_code == 0, result.output
    return result.output


def pairs_pipeline(folder: Path, model: Path, method: str, extra: str = "",
                   max_length: int = 4096, steps: str = "max_steps = 2") -> Path:
    data = data_section("pairs", loader="json", path=DATA / "dpo.json",
                        format="sharegpt_preference")
    stage = stage_section(method, "pairs", max_steps=None, learning_rate=1e-3,
                          max_length=max_length, extra=f"{steps}\n{extra}")
    return tiny_pipeline(folder / "pipeline.toml", model, data, stage, name=f"{method}-test")


def logged_steps(out: Path, stage: str) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [m for m in map(json.loads, lines) if m.get("stage") == stage and "loss" in m]


@pytest.mark.parametrize(("method", "extra"), [("orpo", ""), ("simpo", "gamma = 0.3"),
                                               ("orpo", "adapter = { r = 4 }")])
def test_reference_free_methods_train_with_finite_metrics(tiny_model, tmp_path, method, extra):
    out = run(pairs_pipeline(tmp_path, tiny_model, method, extra), tmp_path / "run")
    logged = logged_steps(out, method)
    assert [m["step"] for m in logged] == [1, 2]
    for m in logged:
        assert math.isfinite(m["loss"])
        assert math.isfinite(m["rewards/margins"]) and math.isfinite(m["rewards/accuracies"])
    assert (out / "model" / "config.json").is_file()


def test_orpo_progress_shows_no_token_rate_it_does_not_count(tiny_model, tmp_path):
    # TRL's ORPO trainer counts no input tokens: its progress line must not claim 0 tok/s,
    # and datasets' note that TRL's map function could not be hashed stays out of the output.
    shown = run_output(pairs_pipeline(tmp_path, tiny_model, "orpo"), tmp_path / "run")
    last = [line for line in shown.splitlines() if "orpo step 2/2" in line]
    assert last and "loss" in last[0] and "tok/s" not in last[0], shown
    assert "hashed" not in shown, shown


@pytest.mark.parametrize("method", ["orpo", "simpo"])
def test_a_pair_whose_prompt_fills_max_length_trains_cut_from_its_start(tiny_model, tmp_path,
                                                                       method):
    # Two of the five test pairs have a prompt over 120 tokens (system prompt; multi-turn):
    # TRL would cut them to an empty answer (NaN); ftp cuts their prompts from the start, as
    # dpo does, so all five train: one epoch of batches of 2 is 3 steps.
    pipeline = pairs_pipeline(tmp_path, tiny_model, method, max_length=120, steps="epochs = 1")
    shown = run_output(pipeline, tmp_path / "run")
    out = tmp_path / "run"
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    tokenized = next(m for m in events if m.get("event") == "tokenized")
    assert tokenized["examples"] == 5 and tokenized["dropped"] == 0, tokenized
    assert tokenized["truncated"] >= 2 and tokenized["truncation_mode"] == "keep_end", tokenized
    assert "their prompts were cut from the start" in shown, shown
    logged = logged_steps(out, method)
    assert [m["step"] for m in logged] == [1, 2, 3]
    assert all(math.isfinite(m["loss"]) for m in logged), logged
    if method == "simpo":
        return  # planned as orpo is (the same rows), checked once below to keep this quick
    # `ftp plan` counts the steps from the same rule: every pair, one epoch, batches of 2.
    planned = run_ftp("plan", str(pipeline), "--json", cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    (stage,) = json.loads(planned.stdout)["stages"]
    assert stage["rows"] == 5 and stage["steps"] == 3, stage


def test_reward_method_trains_a_reward_model_the_reward_model_reward_scores(tiny_model,
                                                                            tmp_path):
    out = run(pairs_pipeline(tmp_path, tiny_model, "reward"), tmp_path / "run")
    logged = logged_steps(out, "reward")
    assert [m["step"] for m in logged] == [1, 2]
    assert all(math.isfinite(m["loss"]) for m in logged)
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "reward"}
    assert config["architectures"][0].endswith("ForSequenceClassification")

    reward = RewardModel(RewardModel.Config(path=str(out / "model")))
    prompts = ["What is 2 + 2?", [{"role": "user", "content": "Name a colour."}]]
    scores = reward.score(prompts, ["4", "blue"], [{}, {}])
    assert len(scores) == 2 and all(math.isfinite(s) for s in scores)
    # Batched and one at a time agree: padding does not change a score.
    one = RewardModel(RewardModel.Config(path=str(out / "model"), batch_size=1))
    assert one.score(prompts, ["4", "blue"], [{}, {}]) == pytest.approx(scores, abs=1e-4)


def test_reward_model_reward_without_a_model_is_one_clear_error(tmp_path):
    reward = RewardModel(RewardModel.Config(path=str(tmp_path / "nothing")))
    with pytest.raises(Exception, match="no model at .*nothing .no config.json."):
        reward.score(["q"], ["a"], [{}])


def test_reward_accuracy_judges_the_reward_model_before_and_after(tiny_model, tmp_path):
    pipeline = pairs_pipeline(tmp_path, tiny_model, "reward")
    text = pipeline.read_text().replace('format = "sharegpt_preference"\n',
                                        'format = "sharegpt_preference"\neval_fraction = 0.4\n')
    text += """
[[evaluate]]
evaluator = "reward_accuracy"
data = "pairs"
before = true
"""
    pipeline.write_text(text)
    out = run(pipeline, tmp_path / "run")
    stages = json.loads((out / "results.json").read_text())["stages"]
    # Before: the new, untrained head; after: the trained one. Both score the same 2 pairs.
    before, after = (stages[s]["reward_accuracy"] for s in ("base", "reward"))
    for found in (before, after):
        assert found["metrics"]["pairs"] == 2
        assert found["metrics"]["accuracy"] in (0.0, 0.5, 1.0)
        assert math.isfinite(found["metrics"]["mean_margin"])
    assert before["metrics"]["mean_margin"] != after["metrics"]["mean_margin"]


def test_reward_method_keeps_long_pairs_by_their_end(tiny_model, tmp_path):
    # At 120 tokens the test pairs are too long when rendered whole (prompt + answer).
    # A reward model reads its score at the last token, so they lose the start of their prompt
    # and every pair trains; nothing is dropped.
    out = run(pairs_pipeline(tmp_path, tiny_model, "reward", max_length=120), tmp_path / "run")
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    tokenized = next(m for m in events if m.get("event") == "tokenized")
    pairs = len(json.loads((DATA / "dpo.json").read_text()))
    assert tokenized["examples"] == pairs
    assert 0 < tokenized["truncated"] <= pairs
    assert all(math.isfinite(m["loss"]) for m in logged_steps(out, "reward"))


def test_end_ids_keep_the_end_where_the_score_is_read(smollm2_tokenizer):
    from ftp_builtin.rewards.model import end_ids

    text = smollm2_tokenizer.apply_chat_template(
        [{"role": "user", "content": "word " * 50}, {"role": "assistant", "content": "yes"}],
        tokenize=False)
    whole = smollm2_tokenizer(text, add_special_tokens=False)["input_ids"]
    ids, cut = end_ids(smollm2_tokenizer, text, 10)
    assert cut and ids == whole[-10:]
    assert smollm2_tokenizer.decode(ids).endswith("yes<|im_end|>\n")
    assert end_ids(smollm2_tokenizer, text, len(whole)) == (whole, False)
