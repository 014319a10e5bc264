"""``grpo`` through the CLI on the tiny model: it trains, logs each reward, and a reward's
logged values are what the reward gives when called directly on the same completions."""

import json
import math
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftp.cli import cli
from ftp.testing import plugin_set, write_pipeline
from ftp_builtin.formats.prompt import Prompt

DATA = Path(__file__).parent / "data"

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def invoke(pipeline: Path, out: Path, *extra: str):
    env = dict(os.environ)
    try:
        return CliRunner().invoke(cli, ["run", str(pipeline), "--output-dir", str(out), *extra])
    finally:  # `ftp run` quiets libraries through the environment; keep that to the run
        os.environ.clear()
        os.environ.update(env)


def grpo_pipeline(folder: Path, model: Path, rewards: str, stage_extra: str = "",
                  head: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_pipeline(folder / "pipeline.toml", f"""
        [pipeline]
        name = "grpo-test"
        seed = 7
        {head}

        [model]
        path = {json.dumps(str(model))}

        [data.sums]
        loader = "json"
        path = {json.dumps(str(DATA / "arithmetic.json"))}
        format = "prompt"
        format_options = {{ prompt = "question", system_prompt = "Answer in <answer></answer>." }}

        [[stages]]
        method = "grpo"
        data = "sums"
        max_steps = 2
        batch_size = 4
        num_generations = 2
        max_completion_length = 8
        logging_steps = 1
        learning_rate = 1e-3
        rewards = {rewards}
        {stage_extra}
    """)


def test_prompt_format_keeps_the_other_fields():
    row = json.loads((DATA / "arithmetic.json").read_text())[0]
    converted = Prompt(Prompt.Config(prompt="question")).convert(row)
    assert converted == {"prompt": [{"role": "user", "content": row["question"]}],
                         "answer": row["answer"], "level": "easy"}
    plain = Prompt(Prompt.Config(prompt="question", chat=False)).convert(row)
    assert plain["prompt"] == row["question"]
    shots = Prompt(Prompt.Config(prompt="question", chat=False,
                                 template="Q: 2 + 2?\nA: {4}\nQ: {prompt}\nA:")).convert(row)
    assert shots["prompt"] == f"Q: 2 + 2?\nA: {{4}}\nQ: {row['question']}\nA:"
    with pytest.raises(ValueError, match="template must hold"):
        Prompt.Config(template="no slot")
    with pytest.raises(ValueError, match="'completion' is reserved"):
        Prompt(Prompt.Config(prompt="question")).convert({**row, "completion": "x"})


def test_prompt_format_examples_are_earlier_turns(tmp_path):
    row = json.loads((DATA / "arithmetic.json").read_text())[0]
    shot = {"prompt": "What is 2 + 3?", "completion": "2 + 3 = 5, so <answer>5</answer>"}
    config = Prompt.Config(prompt="question", system_prompt="Be brief.", examples=[shot])
    converted = Prompt(config).convert(row)
    assert converted["prompt"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": shot["prompt"]},
        {"role": "assistant", "content": shot["completion"]},
        {"role": "user", "content": row["question"]},
    ]
    with pytest.raises(ValueError, match="need chat = true"):
        Prompt.Config(chat=False, examples=[shot])
    with pytest.raises(ValueError, match="completion"):
        Prompt.Config(examples=[{"prompt": "2 + 3?"}])
    # Through the real CLI: a misspelt key in an example is named with its TOML path.
    pipeline = grpo_pipeline(tmp_path, Path("HuggingFaceTB/SmolLM2-135M-Instruct"), REWARDS)
    text = pipeline.read_text().replace(
        'system_prompt = "Answer in <answer></answer>."',
        'examples = [{ prompt = "2 + 3?", answer = "5" }]')
    pipeline.write_text(text)
    result = CliRunner().invoke(cli, ["validate", str(pipeline)])
    assert result.exit_code == 2
    assert "data.sums.format_options.examples[0].answer: unknown key" in result.output
    assert "data.sums.format_options.examples[0].completion: required key is missing" in (
        result.output)


REWARDS = """[
    { reward = "length", max = 12, slack = 20, weight = 0.5 },
    { reward = "numeric_answer", field = "answer" },
]"""


def test_grpo_trains_and_logs_each_reward_as_the_reward_itself_scores(tiny_model, tmp_path):
    out = tmp_path / "run"
    result = invoke(grpo_pipeline(tmp_path, tiny_model, REWARDS, "beta = 0.04"), out)
    assert result.exit_code == 0, result.output
    assert "grpo: generating with transformers" in result.output
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [m for m in logged if m.get("stage") == "grpo" and "loss" in m]
    assert [m["step"] for m in logged] == [1, 2]
    for m in logged:
        for key in ("loss", "reward", "rewards/length/mean", "rewards/numeric_answer/mean",
                    "completions/mean_length", "completions/clipped_ratio", "kl"):
            assert math.isfinite(m[key]), key

    # The completions each reward scored, as written by the run; score them again directly.
    scored = [json.loads(line) for line in
              (out / "stages" / "grpo" / "completions.jsonl").read_text().splitlines()]
    pipeline_rewards = _rewards_of(tmp_path / "pipeline.toml")
    for m in logged:
        for name, reward in pipeline_rewards.items():
            batch = [s for s in scored if s["step"] == m["step"] and s["reward"] == name]
            assert len(batch) == 4  # batch_size completions per step
            direct = reward.score([s["prompt"] for s in batch], [s["completion"] for s in batch],
                                  [s["row"] for s in batch])
            assert direct == [s["value"] for s in batch]
            assert m[f"rewards/{name}/mean"] == pytest.approx(sum(direct) / len(direct))
            assert all(s["row"] == {"answer": s["row"]["answer"], "level": "easy"}
                       for s in batch)
    assert (out / "model" / "config.json").is_file()


def _rewards_of(pipeline: Path) -> dict:
    from ftp.config import load_pipeline

    loaded = load_pipeline(pipeline, plugin_set())
    return {ref.reward: ref.build() for ref in loaded.stages[0].method.config.rewards}


def test_a_reward_that_raises_is_one_line_naming_the_reward_and_plugin(tiny_model, tmp_path):
    plugin = tmp_path / "broken_reward.py"
    plugin.write_text(
        "from ftp import Reward, hookimpl\n\n"
        "class Broken(Reward):\n"
        '    """Always fails."""\n'
        '    name = "broken"\n\n'
        "    def score(self, prompts, completions, rows):\n"
        '        raise KeyError("no such thing")\n\n'
        "@hookimpl\n"
        "def ftp_rewards():\n"
        "    return [Broken]\n")
    pipeline = grpo_pipeline(tmp_path, tiny_model, '[{ reward = "broken" }]',
                             head='plugins = ["broken_reward.py"]')
    result = invoke(pipeline, tmp_path / "run", "--allow-code")
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error")]
    assert errors == ["error: reward 'broken' (plugin 'broken_reward') failed: KeyError: "
                      "'no such thing'"]


def test_groups_must_fit_the_batch(tiny_model, tmp_path):
    pipeline = grpo_pipeline(tmp_path, tiny_model, REWARDS)
    result = CliRunner().invoke(cli, ["validate", str(pipeline),
                                      "--set", "stages[0].num_generations=3"])
    assert result.exit_code != 0
    assert "must be a multiple of num_generations (3)" in result.output


def test_reward_evaluator_scores_greedy_and_sampled_completions_before_and_after(tiny_model,
                                                                                 tmp_path):
    pipeline = grpo_pipeline(tmp_path, tiny_model, REWARDS, "max_steps = 1")
    text = pipeline.read_text().replace("max_steps = 2\n", "")
    text = text.replace('format = "prompt"\n', 'format = "prompt"\neval_fraction = 0.25\n')
    text += """
[[evaluate]]
evaluator = "reward"
data = "sums"
before = true
max_new_tokens = 6
samples = 2
rewards = [
    { reward = "length", max = 12, slack = 20, weight = 0.5 },
    { reward = "numeric_answer" },
]
"""
    pipeline.write_text(text)
    out = tmp_path / "run"
    result = invoke(pipeline, out)
    assert result.exit_code == 0, result.output
    stages = json.loads((out / "results.json").read_text())["stages"]
    for stage in ("base", "grpo"):
        found = stages[stage]["reward"]
        metrics = found["metrics"]
        assert metrics["prompts"] == 2
        for mode in ("greedy", "sampled"):
            for name in ("length", "numeric_answer"):
                assert 0.0 <= metrics[f"{mode}/{name}"] <= 1.0
            assert metrics[f"{mode}/reward"] == pytest.approx(
                0.5 * metrics[f"{mode}/length"] + metrics[f"{mode}/numeric_answer"])
        # The greedy completions kept are the ones scored: the length reward agrees.
        completions = [s["completion"] for s in found["samples"]]
        lengths = _rewards_of(pipeline)["length"].score(["q"] * 2, completions, [{}, {}])
        assert metrics["greedy/length"] == pytest.approx(sum(lengths) / 2)
