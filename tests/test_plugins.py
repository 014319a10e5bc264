"""Plugin loading, blocking, failures and name conflicts, seen through `ftp plugins` and friends."""

import json
import textwrap
from pathlib import Path

import pytest

from ftp.testing import run_ftp as ftp
from ftp.testing import write_pipeline

BUILTINS = {
    "data": {("data_loader", "json"), ("data_loader", "csv"), ("data_loader", "text"),
             ("data_loader", "hub")},
    "formats": {("format", "alpaca"), ("format", "messages"), ("format", "sharegpt"),
                ("format", "text")},
    "hf": {("model_provider", "hf")},
    "sft": {("method", "sft")},
    "cpt": {("method", "cpt")},
    "perplexity": {("evaluator", "perplexity")},
    "evaluators": {("evaluator", "loss"), ("evaluator", "generate")},
}

PIPELINE = """
[pipeline]
name = "demo"

[model]
path = "some-model"

[data.x]
loader = "json"
path = "data.json"
format = "alpaca"

[[stages]]
method = "{method}"
data = "x"
"""


def method_plugin(name: str = "labeller") -> str:
    """A plugin providing one method called ``name``."""
    return textwrap.dedent(f'''
        from ftp import Method, Shape, hookimpl


        class M(Method):
            """A method from a test plugin."""

            name = {name!r}
            accepts = frozenset({{Shape.CONVERSATIONAL}})


        @hookimpl
        def ftp_methods():
            return [M]
        ''')


HOOK_RAISES = '''
from ftp import hookimpl


@hookimpl
def ftp_methods():
    raise RuntimeError("boom in the hook")
'''

IMPORT_RAISES = '''
raise ImportError("no module named frobnicate")
'''

CLI_PLUGIN = '''
import click
from ftp import hookimpl


@click.command()
def hello():
    """Say hello from a plugin."""
    click.echo("hello from a plugin command")


@hookimpl
def ftp_cli_commands():
    return [hello]
'''



def plugins_json(*args: str, cwd: Path, **env: str) -> dict[str, dict]:
    result = ftp(*args, "plugins", "--json", cwd=cwd, **env)
    assert result.returncode == 0, result.stderr
    return {p["name"]: p for p in json.loads(result.stdout)}


def components(info: dict) -> set[tuple[str, str]]:
    return {(c["kind"], c["name"]) for c in info["components"]}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    rows = [{"instruction": "Who are you?", "output": "Nova."}]
    (tmp_path / "data.json").write_text(json.dumps(rows), encoding="utf-8")
    return tmp_path


def pipeline(project: Path, method: str = "sft") -> Path:
    return write_pipeline(project / "pipeline.toml", PIPELINE.format(method=method))


def test_builtins_are_listed_with_their_components(project: Path) -> None:
    infos = plugins_json(cwd=project)
    for name, expected in BUILTINS.items():
        assert infos[name]["status"] == "ok", infos[name]
        assert infos[name]["distribution"] == "ftp"
        assert infos[name]["error"] == ""
        assert expected <= components(infos[name])  # built-ins grow; these must stay


def test_plugins_text_listing(project: Path) -> None:
    result = ftp("plugins", cwd=project)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    sft = next(line for line in lines if line.startswith("sft "))
    assert sft.split()[1] == "ok"
    assert any(line.split() == ["method", "sft"] for line in lines)
    assert any(line.split() == ["model", "provider", "hf"] for line in lines)


def test_hook_that_raises_is_reported_not_fatal(project: Path) -> None:
    (project / "broken.py").write_text(HOOK_RAISES, encoding="utf-8")
    infos = plugins_json("-p", "broken.py", cwd=project)
    assert infos["broken"]["status"] == "error"
    assert "ftp_methods() failed: RuntimeError: boom in the hook" in infos["broken"]["error"]
    assert infos["broken"]["components"] == []
    for name in BUILTINS:
        assert infos[name]["status"] == "ok"

    text = ftp("-p", "broken.py", "plugins", cwd=project)
    assert text.returncode == 0
    broken = next(line for line in text.stdout.splitlines() if line.startswith("broken "))
    assert broken.split()[1] == "error"
    assert "boom in the hook" in text.stdout

    pipeline(project)
    result = ftp("-p", "broken.py", "validate", "pipeline.toml", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_plugin_that_fails_to_import_is_reported_not_fatal(project: Path) -> None:
    (project / "noimport.py").write_text(IMPORT_RAISES, encoding="utf-8")
    infos = plugins_json("-p", "noimport.py", cwd=project)
    assert infos["noimport"]["status"] == "error"
    assert "ImportError: no module named frobnicate" in infos["noimport"]["error"]
    assert all(infos[name]["status"] == "ok" for name in BUILTINS)

    pipeline(project)
    result = ftp("-p", "noimport.py", "validate", "pipeline.toml", cwd=project)
    assert result.returncode == 0, result.stderr


def test_strict_plugins_makes_a_broken_plugin_fatal(project: Path) -> None:
    (project / "broken.py").write_text(HOOK_RAISES, encoding="utf-8")
    pipeline(project)
    for command in (["plugins"], ["validate", "pipeline.toml"]):
        result = ftp("--strict-plugins", "-p", "broken.py", *command, cwd=project)
        assert result.returncode == 2, result.stdout
        assert "Traceback" not in result.stderr
        assert "broken" in result.stderr and "boom in the hook" in result.stderr
    # Without a broken plugin, --strict-plugins changes nothing.
    assert ftp("--strict-plugins", "validate", "pipeline.toml", cwd=project).returncode == 0


def test_pipeline_needing_a_broken_plugin_names_the_failure(project: Path) -> None:
    (project / "noimport.py").write_text(IMPORT_RAISES, encoding="utf-8")
    pipeline(project, method="labeller")
    result = ftp("-p", "noimport.py", "validate", "pipeline.toml", cwd=project)
    assert result.returncode == 2
    assert "stages[0].method: unknown method 'labeller'" in result.stderr
    assert "plugin 'noimport' failed" in result.stderr


def test_component_that_is_not_a_component_class_is_a_plugin_error(project: Path) -> None:
    (project / "wrongkind.py").write_text(textwrap.dedent('''
        from ftp import Evaluator, hookimpl

        class E(Evaluator):
            """An evaluator returned by the methods hook."""
            name = "e"

        @hookimpl
        def ftp_methods():
            return [E]
        '''), encoding="utf-8")
    infos = plugins_json("-p", "wrongkind.py", cwd=project)
    assert infos["wrongkind"]["status"] == "error"
    assert "is not a Method subclass" in infos["wrongkind"]["error"]


def test_duplicate_name_from_two_plugins_names_both(project: Path) -> None:
    (project / "first.py").write_text(method_plugin(), encoding="utf-8")
    (project / "second.py").write_text(method_plugin(), encoding="utf-8")
    infos = plugins_json("-p", "first.py", "-p", "second.py", cwd=project)
    assert infos["first"]["status"] == "ok"
    assert infos["second"]["status"] == "error"
    error = infos["second"]["error"]
    assert "method 'labeller' is provided twice" in error
    assert "'first'" in error and "'second'" in error

    # A pipeline that uses the name cannot know which one it gets: an error, both named.
    pipeline(project, method="labeller")
    result = ftp("-p", "first.py", "-p", "second.py", "validate", "pipeline.toml", cwd=project)
    assert result.returncode == 2
    assert "stages[0].method: method 'labeller' is provided twice" in result.stderr
    assert "'first'" in result.stderr and "'second'" in result.stderr
    # Blocking one settles it.
    result = ftp("-p", "first.py", "-p", "second.py", "-p", "no:first", "validate",
                 "pipeline.toml", cwd=project)
    assert result.returncode == 0, result.stderr


def test_duplicate_of_a_builtin_names_the_builtin_and_its_distribution(project: Path) -> None:
    (project / "mysft.py").write_text(method_plugin("sft"), encoding="utf-8")
    infos = plugins_json("-p", "mysft.py", cwd=project)
    assert infos["mysft"]["status"] == "error"
    assert "by plugin 'sft' (ftp)" in infos["mysft"]["error"]
    assert "by plugin 'mysft' (<local file>)" in infos["mysft"]["error"]
    assert infos["sft"]["status"] == "ok"


def test_unknown_name_lists_the_available_ones(project: Path) -> None:
    write_pipeline(project / "pipeline.toml",
                   PIPELINE.format(method="sft").replace('"alpaca"', '"alpacca"'))
    result = ftp("validate", "pipeline.toml", cwd=project)
    assert result.returncode == 2
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("  - ")]
    assert line.startswith("  - data.x.format: unknown format 'alpacca' (did you mean 'alpaca'?); "
                           "available: ")
    available = line.split("available: ")[1].split(", ")
    assert available == sorted(available)
    assert {"alpaca", "messages", "sharegpt", "text"} <= set(available)


def test_block_a_plugin_with_p_no(project: Path) -> None:
    infos = plugins_json("-p", "no:sft", cwd=project)
    assert infos["sft"]["status"] == "blocked"
    assert infos["sft"]["components"] == []
    assert infos["data"]["status"] == "ok"

    pipeline(project)
    result = ftp("-p", "no:sft", "validate", "pipeline.toml", cwd=project)
    assert result.returncode == 2
    assert "stages[0].method: unknown method 'sft'" in result.stderr
    assert "plugin 'sft' is blocked" in result.stderr
    assert "Traceback" not in result.stderr


def test_block_a_plugin_with_the_environment(project: Path) -> None:
    infos = plugins_json(cwd=project, FTP_DISABLE_PLUGINS="sft,evaluators")
    assert infos["sft"]["status"] == "blocked"
    assert infos["evaluators"]["status"] == "blocked"
    assert infos["formats"]["status"] == "ok"

    pipeline(project)
    result = ftp("validate", "pipeline.toml", cwd=project, FTP_DISABLE_PLUGINS="sft")
    assert result.returncode == 2
    assert "stages[0].method: unknown method 'sft'" in result.stderr


def test_blocked_plugin_can_be_replaced_by_another_provider(project: Path) -> None:
    (project / "mysft.py").write_text(method_plugin("sft"), encoding="utf-8")
    infos = plugins_json("-p", "no:sft", "-p", "mysft.py", cwd=project)
    assert infos["mysft"]["status"] == "ok"
    assert components(infos["mysft"]) == {("method", "sft")}


def test_plugin_module_from_the_environment(project: Path) -> None:
    (project / "pp").mkdir()
    (project / "pp" / "envplugin.py").write_text(method_plugin(), encoding="utf-8")
    infos = plugins_json(cwd=project, FTP_PLUGINS="envplugin", PYTHONPATH=str(project / "pp"))
    assert infos["envplugin"]["status"] == "ok"
    assert infos["envplugin"]["distribution"] == "<local module>"
    assert components(infos["envplugin"]) == {("method", "labeller")}


def test_cli_command_from_a_plugin_in_the_environment(project: Path) -> None:
    (project / "pp").mkdir()
    (project / "pp" / "cliplugin.py").write_text(CLI_PLUGIN, encoding="utf-8")
    env = {"FTP_PLUGINS": "cliplugin", "PYTHONPATH": str(project / "pp")}
    result = ftp("hello", cwd=project, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello from a plugin command"
    help_text = ftp("--help", cwd=project, **env).stdout
    assert "Say hello from a plugin." in help_text
    # Without the plugin there is no such command.
    assert ftp("hello", cwd=project).returncode == 2


def test_cli_command_from_a_plugin_given_with_p(project: Path) -> None:
    (project / "cliplugin.py").write_text(CLI_PLUGIN, encoding="utf-8")
    result = ftp("-p", "cliplugin.py", "hello", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "hello from a plugin command" in result.stdout
    # Blocking the plugin removes its command too.
    blocked = ftp("-p", "cliplugin.py", "-p", "no:cliplugin", "hello", cwd=project)
    assert blocked.returncode == 2


CLI_RAISES = '''
from ftp import hookimpl


@hookimpl
def ftp_cli_commands():
    raise RuntimeError("no commands today")
'''


def test_a_raising_command_hook_does_not_take_the_others_commands(project: Path) -> None:
    (project / "cliplugin.py").write_text(CLI_PLUGIN, encoding="utf-8")
    (project / "clibroken.py").write_text(CLI_RAISES, encoding="utf-8")
    result = ftp("-p", "clibroken.py", "-p", "cliplugin.py", "hello", cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello from a plugin command"
    assert ("warning: plugin 'clibroken' failed in ftp_cli_commands: RuntimeError: no commands "
            "today") in result.stderr
