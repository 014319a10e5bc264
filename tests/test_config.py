"""Pipeline validation through `ftp validate`: every problem at once, with its TOML path."""

import json
import subprocess
from pathlib import Path

import pytest

from ftp.testing import config_problems, write_pipeline
from ftp.testing import run_ftp as ftp

ROWS = [
    {"instruction": "Who are you?", "output": "I am Nova."},
    {"instruction": "Say hi.", "output": "Hi!"},
    {"instruction": "What is 2+2?", "output": "4"},
    {"instruction": "Name a colour.", "output": "Blue."},
]

VALID = """
[pipeline]
name = "demo"

[model]
path = "some-model"

[data.x]
loader = "json"
path = "data.json"
format = "alpaca"

[[stages]]
method = "sft"
data = "x"
epochs = 1
learning_rate = 1e-4
"""

# A method that trains only on labelled text, so that alpaca data (conversational) mismatches.
CLASSIFY_PLUGIN = '''
from ftp import Method, Shape, StrictConfig, hookimpl


class Classify(Method):
    """Train a text classifier."""

    name = "labeller"
    accepts = frozenset({Shape.LABELLED_TEXT})

    class Config(StrictConfig):
        epochs: int = 1


@hookimpl
def ftp_methods():
    return [Classify]
'''



@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "data.json").write_text(json.dumps(ROWS), encoding="utf-8")
    return tmp_path


def validate(project: Path, text: str, *args: str) -> subprocess.CompletedProcess:
    write_pipeline(project / "pipeline.toml", text)
    return ftp(*args, "validate", "pipeline.toml", cwd=project)


def test_valid_pipeline_is_ok(project: Path) -> None:
    result = validate(project, VALID)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    assert "sft" in result.stdout


def test_unknown_method_option_suggests_the_right_one(project: Path) -> None:
    result = validate(project, VALID.replace("learning_rate", "learnin_rate"))
    found = config_problems(result)
    assert found == ["stages[0].learnin_rate: unknown key (did you mean 'learning_rate'?)"]


def test_wrong_type_shows_path_and_value(project: Path) -> None:
    result = validate(project, VALID.replace("learning_rate = 1e-4", 'learning_rate = "fast"'))
    [line] = config_problems(result)
    assert line.startswith("stages[0].learning_rate: ")
    assert "'fast'" in line


def test_out_of_range_value_shows_path_and_value(project: Path) -> None:
    result = validate(project, VALID.replace("epochs = 1", "epochs = -1"))
    [line] = config_problems(result)
    assert line.startswith("stages[0].epochs: ")
    assert "greater than 0" in line
    assert "(got -1)" in line


def test_missing_required_key(project: Path) -> None:
    result = validate(project, VALID.replace('path = "data.json"\n', ""))
    assert config_problems(result) == ["data.x.path: required key is missing"]


def test_unknown_method_suggests_and_lists_available(project: Path) -> None:
    result = validate(project, VALID.replace('method = "sft"', 'method = "sfft"'))
    [line] = config_problems(result)
    assert line.startswith("stages[0].method: unknown method 'sfft'")
    assert "did you mean 'sft'?" in line
    # Every installed method is listed (contrib plugins may add more than the built-in).
    assert "sft" in line.split("available: ")[1].split(", ")


def test_stage_refers_to_undefined_dataset(project: Path) -> None:
    result = validate(project, VALID.replace('data = "x"', 'data = "xx"'))
    [line] = config_problems(result)
    assert line.startswith("stages[0].data: no dataset named 'xx'")
    assert "did you mean 'x'?" in line
    assert "datasets: x" in line


def test_evaluator_that_needs_data_has_none(project: Path) -> None:
    result = validate(project, VALID + '\n[[evaluate]]\nevaluator = "loss"\n')
    [line] = config_problems(result)
    assert line.startswith("evaluate[0].data: evaluator 'loss' needs a dataset")


def test_evaluation_on_held_out_split_of_a_dataset_without_one(project: Path) -> None:
    result = validate(project, VALID + '\n[[evaluate]]\nevaluator = "loss"\ndata = "x"\n')
    [line] = config_problems(result)
    assert line.startswith("evaluate[0].split: dataset 'x' has no held-out split")


def test_evaluation_after_a_stage_that_does_not_exist(project: Path) -> None:
    text = VALID + '\n[[evaluate]]\nevaluator = "generate"\nprompts = ["hi"]\nafter = ["sfft"]\n'
    [line] = config_problems(validate(project, text))
    assert line.startswith("evaluate[0].after[0]: no stage named 'sfft'")
    assert "did you mean 'sft'?" in line


def test_duplicate_stage_names(project: Path) -> None:
    text = VALID + '\n[[stages]]\nmethod = "sft"\ndata = "x"\n'
    [line] = config_problems(validate(project, text))
    assert line.startswith("stages[1].name: stage name 'sft' is already used by stages[0]")


def test_explicit_stage_names_make_two_stages_of_one_method_valid(project: Path) -> None:
    text = VALID + '\n[[stages]]\nname = "again"\nmethod = "sft"\ndata = "x"\n'
    result = validate(project, text)
    assert result.returncode == 0, result.stderr
    assert "sft (sft) → again (sft)" in result.stdout


def test_unknown_top_level_section(project: Path) -> None:
    text = VALID + '\n[[stage]]\nmethod = "sft"\ndata = "x"\n\n[bogus]\na = 1\n'
    found = config_problems(validate(project, text))
    assert "stage: unknown section (did you mean 'stages'?)" in found
    assert "bogus: unknown section" in found
    assert len(found) == 2


def test_nested_unknown_key_has_its_full_path(project: Path) -> None:
    text = VALID + "adapter = { rr = 4 }\n"
    found = config_problems(validate(project, text))
    assert found == ["stages[0].adapter.rr: unknown key (did you mean 'r'?)"]


def test_method_format_shape_mismatch_from_pipeline_plugin(project: Path) -> None:
    (project / "myplugin.py").write_text(CLASSIFY_PLUGIN, encoding="utf-8")
    text = VALID.replace('name = "demo"', 'name = "demo"\nplugins = ["myplugin.py"]')
    text = text.replace('method = "sft"', 'method = "labeller"')
    text = text.replace("learning_rate = 1e-4\n", "")
    write_pipeline(project / "pipeline.toml", text)
    [line] = config_problems(ftp("validate", "pipeline.toml", "--allow-code", cwd=project))
    assert line.startswith("stages[0].data: method 'labeller' trains on labelled_text data")
    assert "format 'alpaca'" in line
    assert "conversational" in line


def test_method_format_shape_mismatch_from_command_line_plugin(project: Path) -> None:
    (project / "myplugin.py").write_text(CLASSIFY_PLUGIN, encoding="utf-8")
    text = VALID.replace('method = "sft"', 'method = "labeller"')
    text = text.replace("learning_rate = 1e-4\n", "")
    [line] = config_problems(validate(project, text, "-p", "myplugin.py"))
    assert line.startswith("stages[0].data: method 'labeller' trains on labelled_text data")
    # Without the plugin the method is simply unknown.
    [line] = config_problems(validate(project, text))
    assert line.startswith("stages[0].method: unknown method 'labeller'")


def test_missing_pipeline_plugin_file(project: Path) -> None:
    text = VALID.replace('name = "demo"', 'name = "demo"\nplugins = ["nothere.py"]')
    write_pipeline(project / "pipeline.toml", text)
    [line] = config_problems(ftp("validate", "pipeline.toml", "--allow-code", cwd=project))
    assert line.startswith("pipeline.plugins: plugin file not found")
    assert "nothere.py" in line


def test_every_mistake_in_one_file_is_reported_at_once(project: Path) -> None:
    text = """
    [pipeline]
    name = "demo"
    seeed = 3

    [model]
    path = "some-model"
    pth = "typo"

    [data.x]
    loader = "json"
    format = "alpaca"

    [[stages]]
    method = "sfft"
    data = "y"

    [[stages]]
    method = "sft"
    data = "x"
    learnin_rate = 1e-4
    epochs = -1
    adapter = { r = 0 }

    [[stages]]
    method = "sft"
    data = "x"

    [[evaluate]]
    evaluator = "loss"

    [[evaluate]]
    evaluator = "generate"
    promts = ["hi"]
    after = ["nostage"]

    [bogus]
    a = 1
    """
    result = validate(project, text)
    found = config_problems(result)
    paths = [line.split(": ", 1)[0] for line in found]
    expected = [
        "bogus",                        # unknown section
        "pipeline.seeed",               # unknown key in [pipeline]
        "model.pth",                    # unknown provider option
        "data.x.path",                  # missing required key
        "stages[0].method",             # unknown component
        "stages[0].data",               # undefined dataset
        "stages[1].adapter.r",          # bad value in a nested table
        "stages[1].epochs",             # bad value for a method option
        "stages[1].learnin_rate",       # unknown method option
        "stages[2].name",               # duplicate stage name
        "evaluate[0].data",             # evaluator needs data
        "evaluate[1].prompts",          # missing required evaluator option
        "evaluate[1].promts",           # unknown evaluator option
        "evaluate[1].after[0]",         # no such stage
    ]
    assert sorted(paths) == sorted(expected), result.stderr
    assert f"{len(expected)} problems in the pipeline" in result.stderr
    assert "pipeline.seeed: unknown key (did you mean 'seed'?)" in found
    assert "model.pth: unknown key (did you mean 'path'?)" in found
    assert "evaluate[1].promts: unknown key (did you mean 'prompts'?)" in found


def test_bad_pipeline_section_does_not_hide_other_problems(project: Path) -> None:
    text = VALID.replace('name = "demo"', 'name = "has spaces"')
    text = text.replace("learning_rate", "learnin_rate")
    found = config_problems(validate(project, text))
    paths = sorted(line.split(": ", 1)[0] for line in found)
    assert paths == ["pipeline.name", "stages[0].learnin_rate"]


def test_bad_stage_key_does_not_hide_method_option_problems(project: Path) -> None:
    text = VALID.replace("epochs = 1", "epochs = 1\nadapter = { r = -1 }\nadaptr = { r = 4 }")
    text = text.replace("learning_rate = 1e-4", 'learning_rate = "fast"')
    found = config_problems(validate(project, text))
    paths = sorted(line.split(": ", 1)[0] for line in found)
    assert paths == ["stages[0].adapter.r", "stages[0].adaptr", "stages[0].learning_rate"]
    assert "stages[0].adaptr: unknown key (did you mean 'adapter'?)" in found


# --- --set KEY=VALUE -------------------------------------------------------------------------


def test_set_override_fixes_a_bad_value(project: Path) -> None:
    text = VALID.replace("epochs = 1", "epochs = -1")
    assert validate(project, text).returncode == 2
    result = ftp("validate", "pipeline.toml", "--set", "stages[0].epochs=1", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_set_override_with_a_bad_value_is_reported_with_its_path(project: Path) -> None:
    write_pipeline(project / "pipeline.toml", VALID)
    result = ftp("validate", "pipeline.toml", "--set", "stages[0].learning_rate=fast",
                 "--set", "stages[0].epochs=0", cwd=project)
    found = config_problems(result)
    paths = sorted(line.split(": ", 1)[0] for line in found)
    assert paths == ["stages[0].epochs", "stages[0].learning_rate"]
    assert any("'fast'" in line for line in found)


def test_set_override_values_are_toml(project: Path) -> None:
    write_pipeline(project / "pipeline.toml", VALID)
    # A quoted TOML string keeps its space, so the name pattern rejects it ...
    result = ftp("validate", "pipeline.toml", "--set", 'pipeline.name="two words"', cwd=project)
    [line] = config_problems(result)
    assert line.startswith("pipeline.name: ") and "'two words'" in line
    # ... and a new key in a new table is created where it belongs.
    result = ftp("validate", "pipeline.toml", "--set", "data.y.loader=json",
                 "--set", "data.y.format=alpaca", cwd=project)
    assert config_problems(result) == ["data.y.path: required key is missing"]


@pytest.mark.parametrize(("override", "message"), [
    ("stages[3].epochs=1", "no such entry [3]"),
    ("stages[0].epochs", "expected KEY=VALUE"),
])
def test_set_override_that_cannot_apply_is_one_line_error(
    project: Path, override: str, message: str
) -> None:
    write_pipeline(project / "pipeline.toml", VALID)
    result = ftp("validate", "pipeline.toml", "--set", override, cwd=project)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_pipeline_plugins_are_found_next_to_the_pipeline_file(project: Path) -> None:
    (project / "myplugin.py").write_text(CLASSIFY_PLUGIN, encoding="utf-8")
    text = VALID.replace('name = "demo"', 'name = "demo"\nplugins = ["myplugin.py"]')
    text = text.replace('method = "sft"', 'method = "labeller"')
    text = text.replace("learning_rate = 1e-4\n", "").replace('"alpaca"', '"text"')
    write_pipeline(project / "pipeline.toml", text)
    # Run from elsewhere: the plugin path is relative to the pipeline file, not the cwd.
    result = ftp("validate", str(project / "pipeline.toml"), "--allow-code", cwd=project.parent)
    [line] = config_problems(result)
    assert line.startswith("stages[0].data: method 'labeller' trains on labelled_text data")
    assert "produces language_modeling" in line
