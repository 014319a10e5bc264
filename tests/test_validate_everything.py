"""`ftp validate` reports every problem at once: behind an unknown method, and on the disk."""

import json
import subprocess
from pathlib import Path

import pytest

from ftp.testing import config_problems, write_pipeline
from ftp.testing import run_ftp as ftp

ROOT = Path(__file__).resolve().parent.parent

ROWS = [{"instruction": "Who are you?", "output": "I am Nova."}]

PIPELINE = """
[pipeline]
name = "everything"

[model]
path = "{model}"

[data.x]
loader = "json"
path = "train.json"
format = "alpaca"

[[stages]]
method = "sft"
data = "x"
"""



@pytest.fixture
def project(tmp_path: Path, tiny_model: Path) -> Path:
    (tmp_path / "train.json").write_text(json.dumps(ROWS), encoding="utf-8")
    write_pipeline(tmp_path / "pipeline.toml", PIPELINE.format(model=tiny_model))
    return tmp_path


def validate(project: Path, text: str) -> subprocess.CompletedProcess:
    write_pipeline(project / "pipeline.toml", text)
    return ftp("validate", "pipeline.toml", cwd=project)


# -- an unknown method does not hide the stage's other errors ---------------------------------


def test_a_misspelt_method_and_a_bad_learning_rate_are_both_reported(project: Path,
                                                                     tiny_model: Path) -> None:
    text = PIPELINE.format(model=tiny_model).replace('method = "sft"', 'method = "sfft"')
    found = config_problems(validate(project, text + 'learning_rate = "fast"\nepochs = -1\n'))

    assert found[0].startswith("stages[0].method: unknown method 'sfft' (did you mean 'sft'?)")
    assert any(p.startswith("stages[0].learning_rate: ") and "'fast'" in p for p in found), found
    assert any(p.startswith("stages[0].epochs: ") for p in found), found
    assert len(found) == 3, found


def test_keys_only_some_methods_take_are_not_guessed_at(project: Path, tiny_model: Path) -> None:
    """With the method unknown, an option only some methods have (beta, DPO's) is not judged."""
    text = PIPELINE.format(model=tiny_model).replace('method = "sft"', 'method = "dpoo"')
    [line] = config_problems(validate(project, text + 'beta = "high"\n'))
    assert line.startswith("stages[0].method: unknown method 'dpoo'")


# -- local paths the pipeline names -----------------------------------------------------------


def test_a_missing_data_file_is_found_by_validate(project: Path, tiny_model: Path) -> None:
    text = PIPELINE.format(model=tiny_model).replace('"train.json"', '"trian.json"')
    [line] = config_problems(validate(project, text))
    assert line == "data.x.path: data file not found: trian.json"


def test_a_glob_that_matches_nothing_is_found_by_validate(project: Path, tiny_model: Path) -> None:
    text = PIPELINE.format(model=tiny_model).replace('"train.json"', '"shards/*.jsonl"')
    [line] = config_problems(validate(project, text))
    assert line == "data.x.path: no files match shards/*.jsonl"


def test_a_missing_eval_file_is_found_by_validate(project: Path, tiny_model: Path) -> None:
    text = PIPELINE.format(model=tiny_model).replace(
        'format = "alpaca"', 'format = "alpaca"\neval_path = "held_out.json"')
    [line] = config_problems(validate(project, text))
    assert line == "data.x.eval_path: data file not found: held_out.json"


def test_missing_model_folder_and_chat_template_file_are_found(project: Path,
                                                               tiny_model: Path) -> None:
    text = PIPELINE.format(model="./models/mine").replace(
        "[model]\n", '[model]\nchat_template = "templates/chat.jinja"\n')
    found = config_problems(validate(project, text))
    assert any(p.startswith("model.chat_template: ") and "templates/chat.jinja" in p
               for p in found), found
    assert "model.path: model folder not found: models/mine" in found


def test_every_path_problem_is_reported_with_the_others(project: Path) -> None:
    text = PIPELINE.format(model="./models/mine").replace('"train.json"', '"nothere.json"')
    found = config_problems(validate(project, text + "batch_size = 0\n"))
    assert [p.split(":")[0] for p in found] == ["model.path", "data.x.path",
                                                "stages[0].batch_size"]


def test_the_quickstart_with_a_missing_data_file_fails_validation(tmp_path: Path) -> None:
    quickstart = ROOT / "examples" / "quickstart.toml"
    assert ftp("validate", str(quickstart), cwd=tmp_path).returncode == 0
    result = ftp("validate", str(quickstart), "--set", "data.identity.path=data/identiy.json",
                 cwd=tmp_path)
    [line] = config_problems(result)
    assert line.startswith("data.identity.path: data file not found: ")
    assert line.endswith("identiy.json")
