"""Secrets are masked in what ftp writes and shows (the run directory, the terminal)."""

import json
from pathlib import Path

import pytest

from ftp.masking import is_secret_key, mask_secrets, mask_text, mask_toml
from ftp.testing import run_ftp as ftp
from ftp.testing import write_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")

SECRET = "hunter2"
ROWS = [{"instruction": "Who are you?", "output": "I am Nova."},
        {"instruction": "Say hi.", "output": "Hi!"}]

PIPELINE = f"""
[pipeline]
name = "secrets"
description = "rows mirrored from https://bob:{SECRET}@data.example.com/qa"

[model]
path = "{{model}}"

[data.x]
loader = "json"
path = "train.json"
format = "alpaca"

[[stages]]
method = "sft"
data = "x"
max_steps = 1
batch_size = 2
"""



@pytest.fixture
def project(tmp_path: Path, tiny_model: Path) -> Path:
    (tmp_path / "train.json").write_text(json.dumps(ROWS), encoding="utf-8")
    write_pipeline(tmp_path / "pipeline.toml", PIPELINE.format(model=tiny_model))
    return tmp_path


def test_a_run_directory_holds_no_password(project: Path) -> None:
    result = ftp("run", "pipeline.toml", cwd=project)

    assert result.returncode == 0, result.stderr
    run = project / "runs" / "secrets"
    leaked = [str(p.relative_to(run)) for p in run.rglob("*")
              if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaked == []
    masked = "rows mirrored from https://bob:***@data.example.com/qa"
    resolved = json.loads((run / "resolved.json").read_text())
    assert resolved["raw"]["pipeline"]["description"] == masked
    assert f'description = "{masked}"' in (run / "pipeline.toml").read_text()
    assert SECRET in (project / "pipeline.toml").read_text()  # the user's file is untouched


def test_a_problem_report_masks_the_value_it_quotes(project: Path) -> None:
    result = ftp("validate", "pipeline.toml", "--set",
                 f'stages[0].learning_rate="https://bob:{SECRET}@host/lr"', cwd=project)

    assert result.returncode == 2
    assert "(got 'https://bob:***@host/lr')" in result.stderr
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize(("key", "secret"), [
    ("token", True), ("hf_token", True), ("HF_TOKEN", True), ("password", True),
    ("db_passwd", True), ("api_key", True), ("apiKey", True), ("AWS_SECRET_ACCESS_KEY", True),
    ("client_secret", True), ("credentials", True), ("auth", True),
    ("pad_token", False), ("eos_token", False), ("max_new_tokens", False),
    ("tokenizer", False), ("role_key", False), ("content_key", False), ("key", False),
    ("tracking_uri", False), ("tokens_seen", False),
])
def test_which_keys_name_secrets(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_masking_keeps_what_is_not_secret() -> None:
    assert mask_text("postgresql://u:p%40ss@db:5432/x and https://host/a:b@c") == \
        "postgresql://u:***@db:5432/x and https://host/a:b@c"
    assert mask_text("token hf_abcdefghijklmnopqrstuvwx1234") == "token hf_***"
    assert mask_secrets({"hub": {"token": "abc", "revision": "main"}, "auth": None,
                         "list": [{"password": 12345}]}) == \
        {"hub": {"token": "***", "revision": "main"}, "auth": None, "list": [{"password": "***"}]}
    assert mask_toml('token = "abc"\npad_token = "<pad>"\n"api_key" = \'k\'\n') == \
        'token = "***"\npad_token = "<pad>"\n"api_key" = "***"\n'


def test_masking_is_public_api_and_judges_dotted_names_by_their_last_word() -> None:
    import ftp

    assert {"mask_secrets", "mask_text"} <= set(ftp.__all__)
    assert ftp.mask_secrets({"data.hub.token": "abc", "data.x.pad_token": "<pad>"}) == \
        {"data.hub.token": "***", "data.x.pad_token": "<pad>"}
