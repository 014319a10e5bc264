"""Code named by a pipeline file runs only with the user's consent (--allow-code, FTP_ALLOW_CODE).

A pipeline.toml may come from anywhere; ``[pipeline] plugins`` imports Python files while the
pipeline is validated and ``trust_remote_code = true`` runs model code from the Hub.
"""

import json
import subprocess
from pathlib import Path

import pytest

from ftp.testing import one_line_error, run_ftp, write_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")

ROWS = [{"instruction": "Who are you?", "output": "I am Nova."},
        {"instruction": "Say hi.", "output": "Hi!"}]

# Importing this file leaves a trace: the proof that the pipeline's code ran.
PLUGIN = """
from pathlib import Path

Path(__file__).with_name("imported.txt").write_text("the plugin file ran")
"""

PIPELINE = """
[pipeline]
name = "consent"
plugins = ["tools/notify.py"]

[model]
path = "{model}"

[data.x]
loader = "json"
path = "train.json"
format = "alpaca"

[[stages]]
method = "sft"
data = "x"
max_steps = 1
batch_size = 2
adapter = {{ r = 4 }}
"""


def ftp(*args: str, cwd: Path, allow_env: bool = False) -> subprocess.CompletedProcess[str]:
    """``ftp ARGS`` in a subprocess; consent by the environment only with ``allow_env``."""
    return run_ftp(*args, cwd=cwd, **({"FTP_ALLOW_CODE": "1"} if allow_env else {}))


@pytest.fixture
def project(tmp_path: Path, tiny_model: Path) -> Path:
    (tmp_path / "train.json").write_text(json.dumps(ROWS), encoding="utf-8")
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "notify.py").write_text(PLUGIN, encoding="utf-8")
    write_pipeline(tmp_path / "pipeline.toml", PIPELINE.format(model=tiny_model))
    return tmp_path


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_local_plugin_file_is_refused_without_consent(project: Path, command: str) -> None:
    line = one_line_error(ftp(command, "pipeline.toml", cwd=project))

    assert "plugin 'tools/notify.py' ([pipeline] plugins)" in line
    assert "--allow-code" in line and "FTP_ALLOW_CODE=1" in line
    assert not (project / "tools" / "imported.txt").exists()  # the file was never imported
    assert not (project / "runs").exists()  # nothing was written either


def test_validate_loads_it_with_allow_code_or_the_environment(project: Path) -> None:
    flag = ftp("validate", "pipeline.toml", "--allow-code", cwd=project)
    assert flag.returncode == 0, flag.stderr
    assert (project / "tools" / "imported.txt").read_text() == "the plugin file ran"

    (project / "tools" / "imported.txt").unlink()
    env = ftp("validate", "pipeline.toml", cwd=project, allow_env=True)
    assert env.returncode == 0, env.stderr
    assert (project / "tools" / "imported.txt").is_file()


def test_run_with_allow_code_runs_the_pipeline(project: Path) -> None:
    result = ftp("run", "pipeline.toml", "--allow-code", cwd=project)

    assert result.returncode == 0, result.stdout + result.stderr
    assert (project / "tools" / "imported.txt").is_file()
    status = json.loads((project / "runs" / "consent" / "run.json").read_text())
    assert status["status"] == "finished"


def test_trust_remote_code_needs_consent_too(project: Path) -> None:
    text = (project / "pipeline.toml").read_text()
    text = text.replace('plugins = ["tools/notify.py"]\n', "")
    text = text.replace("[model]\n", "[model]\ntrust_remote_code = true\n")
    (project / "pipeline.toml").write_text(text)

    line = one_line_error(ftp("validate", "pipeline.toml", cwd=project))
    assert "model code from the Hub (model.trust_remote_code = true)" in line
    assert ftp("validate", "pipeline.toml", "--allow-code", cwd=project).returncode == 0


def test_consent_is_checked_after_set_overrides(project: Path) -> None:
    """``--set`` can add code as well as remove it: what is checked is what would run."""
    removed = ftp("validate", "pipeline.toml", "--set", "pipeline.plugins=[]", cwd=project)
    assert removed.returncode == 0, removed.stderr

    added = ftp("validate", "pipeline.toml", "--set", "pipeline.plugins=[]",
                "--set", "model.trust_remote_code=true", cwd=project)
    assert "model.trust_remote_code" in one_line_error(added)
