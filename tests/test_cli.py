"""The `ftp` command line: help, exit codes, one-line errors, components and schema."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftp.cli import cli
from ftp.testing import one_line_error, write_pipeline
from ftp.testing import run_ftp as ftp

COMMANDS = {"validate", "run", "plugins", "components", "schema"}



def test_help(tmp_path: Path) -> None:
    result = ftp("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "Finetune language models" in result.stdout
    listed = {line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines()
              if line.strip()}
    assert listed >= COMMANDS


def test_help_of_a_command(tmp_path: Path) -> None:
    result = ftp("validate", "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "--set KEY=VALUE" in result.stdout


def test_console_script_and_python_m_agree(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("ftp")
    via_script = subprocess.run([str(script), "--help"], capture_output=True, text=True,
                                cwd=tmp_path, timeout=60)
    via_module = ftp("--help", cwd=tmp_path)
    assert via_script.returncode == 0 and via_module.returncode == 0
    assert via_script.stdout == via_module.stdout


def test_version(tmp_path: Path) -> None:
    result = ftp("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("ftp, version ")


def test_validate_missing_file(tmp_path: Path) -> None:
    line = one_line_error(ftp("validate", "missing.toml", cwd=tmp_path))
    assert line == "error: pipeline file not found: missing.toml"


def test_validate_invalid_toml(tmp_path: Path) -> None:
    (tmp_path / "broken.toml").write_text('[pipeline]\nname = "x\n', encoding="utf-8")
    line = one_line_error(ftp("validate", "broken.toml", cwd=tmp_path))
    assert line.startswith("error: broken.toml: not valid TOML:")
    assert "line 2" in line


def test_validate_binary_file(tmp_path: Path) -> None:
    (tmp_path / "blob.toml").write_bytes(b"\xff\xfe\x00garbage")
    line = one_line_error(ftp("validate", "blob.toml", cwd=tmp_path))
    assert "not a UTF-8 text file" in line


def test_run_of_an_invalid_pipeline_is_a_config_error_before_anything_runs(
    tmp_path: Path,
) -> None:
    write_pipeline(tmp_path / "p.toml", """
        [pipeline]
        name = "p"
        [[stages]]
        method = "sft"
        data = "nowhere"
        """)
    result = ftp("run", "p.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert "stages[0].data: no dataset named 'nowhere'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_unknown_command_and_missing_argument(tmp_path: Path) -> None:
    assert ftp("nonsense", cwd=tmp_path).returncode == 2
    result = ftp("validate", cwd=tmp_path)
    assert result.returncode == 2
    assert "Missing argument" in result.stderr


def test_components_of_one_kind_with_options(tmp_path: Path) -> None:
    result = ftp("components", "method", "--options", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "methods:"
    start = next(i for i, line in enumerate(lines) if line.split()[0] == "sft")
    assert lines[start].rstrip().endswith("[sft]")
    options = set()
    for line in lines[start + 1:]:
        if not line.startswith("      "):  # the next component
            break
        options.add(line.split(":")[0].strip())
    assert {"epochs", "learning_rate", "batch_size", "max_length", "max_steps"} <= options
    assert "learning_rate: float = 0.0002" in result.stdout
    # Other kinds are not shown.
    assert "alpaca" not in result.stdout


def test_components_required_option_has_no_default(tmp_path: Path) -> None:
    result = ftp("components", "loader", "--options", cwd=tmp_path)
    assert result.returncode == 0
    path_line = next(line for line in result.stdout.splitlines()
                     if line.strip().startswith("path:"))
    assert "=" not in path_line.split("—")[0]


def test_components_json_covers_every_kind(tmp_path: Path) -> None:
    result = ftp("components", "--json", cwd=tmp_path)
    assert result.returncode == 0
    items = json.loads(result.stdout)
    kinds = {(i["kind"], i["name"]) for i in items}
    assert {("data_loader", "json"), ("format", "alpaca"), ("model_provider", "hf"),
            ("method", "sft"), ("evaluator", "loss")} <= kinds
    sft = next(i for i in items if i["name"] == "sft")
    assert sft["plugin"] == "sft"
    assert any(o["name"] == "epochs" and not o["required"] for o in sft["options"])


def test_components_unknown_kind(tmp_path: Path) -> None:
    line = one_line_error(ftp("components", "nonsense", cwd=tmp_path))
    assert line.startswith("error: unknown kind 'nonsense'")
    assert "loader, format, provider, method, evaluator" in line
    line = one_line_error(ftp("components", "methd", cwd=tmp_path))
    assert "did you mean 'method'?" in line


def test_schema_is_json_with_the_installed_components(tmp_path: Path) -> None:
    result = ftp("schema", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["required"] == ["pipeline", "stages"]
    stages = schema["properties"]["stages"]
    assert stages["type"] == "array"
    methods = {v["properties"]["method"]["const"] for v in stages["items"]["anyOf"]}
    assert "sft" in methods
    sft = next(v for v in stages["items"]["anyOf"] if v["properties"]["method"]["const"] == "sft")
    assert sft["additionalProperties"] is False
    assert "learning_rate" in sft["properties"] and "adapter" in sft["properties"]
    providers = {v["properties"]["provider"]["const"]
                 for v in schema["properties"]["model"]["anyOf"]}
    assert "hf" in providers


def test_schema_includes_a_local_plugin(tmp_path: Path) -> None:
    (tmp_path / "extra.py").write_text('''
from ftp import Method, Shape, StrictConfig, hookimpl


class Tagger(Method):
    """Train a text tagger."""

    name = "tagger"
    accepts = frozenset({Shape.LABELLED_TEXT})

    class Config(StrictConfig):
        num_labels: int = 2


@hookimpl
def ftp_methods():
    return [Tagger]
''', encoding="utf-8")
    result = ftp("-p", "extra.py", "schema", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    variants = json.loads(result.stdout)["properties"]["stages"]["items"]["anyOf"]
    by_method = {v["properties"]["method"]["const"]: v for v in variants}
    assert {"tagger", "sft"} <= set(by_method)
    assert "num_labels" in by_method["tagger"]["properties"]
    assert "num_labels" not in by_method["sft"]["properties"]


@pytest.mark.parametrize("args", [["plugins"], ["components"], ["schema"]])
def test_in_process_commands_exit_zero(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args, env={"FTP_PLUGINS": "", "FTP_DISABLE_PLUGINS": ""})
    assert result.exit_code == 0, result.output
    assert result.exception is None
