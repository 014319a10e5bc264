"""The reward kind: the built-in rewards on real completions, their options, the listing."""

import json

import pytest

from ftp import Reward, RewardRef, StrictConfig, hookimpl
from ftp.config import load_pipeline
from ftp.errors import ConfigError
from ftp.testing import plugin_set, run_cli, write_pipeline
from ftp_builtin.rewards.text import (
    ExactMatch,
    JsonValid,
    Length,
    NumericAnswer,
    RegexReward,
    fits_schema,
    parse_number,
)

ANSWER = "<answer>(.*?)</answer>"


def score(reward: Reward, completions: list[str], rows: list[dict] | None = None) -> list:
    rows = rows if rows is not None else [{} for _ in completions]
    return reward.score(["q"] * len(completions), completions, rows)


def test_regex_scores_a_format():
    reward = RegexReward(RegexReward.Config(pattern=r"^<think>.*</think>\s*<answer>.*</answer>$"))
    assert score(reward, ["<think>a\nb</think> <answer>5</answer>", "<answer>5</answer>",
                          "5"]) == [1.0, 0.0, 0.0]
    full = RegexReward(RegexReward.Config(pattern=r"\d+", full=True))
    assert score(full, ["42\n", "x 42"]) == [1.0, 0.0]


def test_exact_match_compares_the_extracted_answer_with_a_row_field():
    reward = ExactMatch(ExactMatch.Config(extract=ANSWER, field="answer"))
    rows = [{"answer": "Paris"}] * 3
    assert score(reward, ["<answer> Paris </answer>", "<answer>paris</answer>", "Paris"],
                 rows) == [1.0, 0.0, 0.0]
    loose = ExactMatch(ExactMatch.Config(ignore_case=True))
    assert score(loose, ["paris"], rows[:1]) == [1.0]


def test_numeric_answer_takes_the_last_number_and_a_tolerance():
    reward = NumericAnswer(NumericAnswer.Config(extract=ANSWER))
    rows = [{"answer": "1234"}, {"answer": 1234}, {"answer": "1,234"}, {"answer": "7"}]
    completions = ["<answer>1,234</answer>", "so 3 + 4 = <answer>1234.0</answer>",
                   "<answer>x = 2, so 1234</answer>", "7 but no tags"]
    assert score(reward, completions, rows) == [1.0, 1.0, 1.0, 0.0]
    near = NumericAnswer(NumericAnswer.Config(tolerance=0.5))
    assert score(near, ["3.4", "3.6"], [{"answer": "3"}] * 2) == [1.0, 0.0]
    assert parse_number("no digits") is None and parse_number("-2.5e1 then") == -25.0


def test_a_missing_reference_field_is_one_clear_error():
    reward = NumericAnswer(NumericAnswer.Config(field="solution"))
    with pytest.raises(Exception, match="the row has no field 'solution' .fields: answer"):
        score(reward, ["3"], [{"answer": "3"}])


def test_length_is_one_inside_the_range_and_falls_off_with_slack():
    words = Length(Length.Config(min=2, max=4, unit="words"))
    assert score(words, ["one", "one two", "a b c d", "a b c d e"]) == [0.0, 1.0, 1.0, 0.0]
    soft = Length(Length.Config(max=10, slack=10))
    assert score(soft, ["x" * 10, "x" * 15, "x" * 30]) == [1.0, 0.5, 0.0]


def test_json_valid_with_and_without_a_schema():
    plain = JsonValid(JsonValid.Config())
    assert score(plain, ['{"a": 1}', "[1, 2]", "{a: 1}"]) == [1.0, 1.0, 0.0]
    schema = {"type": "object", "required": ["name", "age"],
              "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}
    options = {"json_schema": schema, "extract": "```json(.*?)```"}
    typed = JsonValid(JsonValid.Config.model_validate(options))
    assert score(typed, ['```json{"name": "a", "age": 3}```', '```json{"name": "a"}```',
                         '```json{"name": "a", "age": "3"}```', '{"name": "a", "age": 3}']
                 ) == [1.0, 0.0, 0.0, 0.0]
    assert fits_schema(True, {"type": "integer"}) is False
    assert fits_schema([1, 2], {"type": "array", "items": {"enum": [1, 2]}}) is True


def pipeline_with_rewards(tmp_path, rewards: str):
    (tmp_path / "q.json").write_text('[{"question": "What is 1 + 1?", "answer": "2"}]')
    return write_pipeline(tmp_path / "p.toml", f"""
        [pipeline]
        name = "r"
        [model]
        path = "unused"
        [data.q]
        loader = "json"
        path = "q.json"
        format = "prompt"
        format_options = {{ prompt = "question" }}
        [[stages]]
        method = "grpo"
        data = "q"
        batch_size = 4
        rewards = {rewards}
    """)


def test_reward_options_are_validated_with_the_pipeline(tmp_path):
    path = pipeline_with_rewards(tmp_path, """[
        { reward = "regex", pattern = "(" },
        { reward = "numeric_anser" },
        { reward = "length", max = 10, wieght = 2 },
    ]""")
    with pytest.raises(ConfigError) as err:
        load_pipeline(path, plugin_set())
    text = str(err.value)
    assert "stages[0].rewards[0].pattern" in text and "not a valid regular expression" in text
    assert "stages[0].rewards[1].reward" in text and "did you mean 'numeric_answer'" in text
    assert "stages[0].rewards[2].wieght" in text and "did you mean 'weight'" in text


def test_two_entries_of_one_reward_need_distinct_names(tmp_path):
    twice = """[{ reward = "regex", pattern = "a" }, { reward = "regex", pattern = "b" }]"""
    with pytest.raises(ConfigError, match="two rewards are called 'regex': give one a distinct"):
        load_pipeline(pipeline_with_rewards(tmp_path, twice), plugin_set())
    named = """[{ reward = "regex", pattern = "a" },
               { reward = "regex", pattern = "b", name = "other" }]"""
    refs = load_pipeline(pipeline_with_rewards(tmp_path, named),
                         plugin_set()).stages[0].method.config.rewards
    assert [r.label for r in refs] == ["regex", "other"]
    assert refs[1].build().config.pattern == "b"


def test_a_validated_reward_ref_builds_its_component(tmp_path):
    path = pipeline_with_rewards(tmp_path, """[
        { reward = "numeric_answer", weight = 2.0, extract = "<answer>(.*?)</answer>" },
    ]""")
    pipeline = load_pipeline(path, plugin_set())
    ref = pipeline.stages[0].method.config.rewards[0]
    assert isinstance(ref, RewardRef) and ref.weight == 2.0 and ref.plugin == "rewards"
    reward = ref.build()
    assert isinstance(reward, NumericAnswer) and reward.config.extract == ANSWER


def test_components_reward_lists_the_builtins_with_their_options():
    result = run_cli("components", "reward", "--options")
    assert result.exit_code == 0, result.output
    for name in ("regex", "exact_match", "numeric_answer", "length", "json_valid",
                 "reward_model"):
        assert name in result.stdout
    assert "pattern" in result.stdout and "tolerance" in result.stdout
    listed = json.loads(run_cli("components", "rewards", "--json").stdout)
    assert {c["name"] for c in listed} >= {"regex", "reward_model"}


class Shouty(Reward):
    """1.0 for completions in capitals."""

    name = "shouty"

    class Config(StrictConfig):
        """No options."""

    def score(self, prompts, completions, rows):
        return [float(c.isupper()) for c in completions]


class ShoutyPlugin:
    @hookimpl
    def ftp_rewards(self):
        return [Shouty]


def test_a_plugin_registers_a_reward_through_the_hook():
    ps = plugin_set(ShoutyPlugin())
    entry = ps.registry.get("reward", "shouty")
    assert entry.plugin == "ShoutyPlugin"
    assert entry.cls().score(["q"], ["HI", "hi"], [{}, {}]) == [1.0, 0.0]
