"""ftp.testing and its opt-in pytest plugin: what plugin authors test with."""

import json
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import click
import pytest

from ftp import ConfigError, Method, Shape, UserError, hookimpl
from ftp.plugins import ENTRY_POINT_GROUP
from ftp.testing import plugin, plugin_set, run_cli, run_pipeline


class Greeter:
    """A plugin object: a method component and a command."""

    class Echo(Method):
        """Returns the model untouched (a test method)."""

        name = "echo"
        accepts = frozenset({Shape.CONVERSATIONAL})

        def train(self, ctx):
            return ctx.model

    @click.command()
    def greet():
        """Say hello."""
        click.echo("hello from an in-process plugin")

    @hookimpl
    def ftp_methods(self):
        return [self.Echo]

    @hookimpl
    def ftp_cli_commands(self):
        return [self.greet]


class Broken:
    """A plugin whose registration hook raises."""

    @hookimpl
    def ftp_methods(self):
        raise RuntimeError("nope")


def listed() -> dict[str, dict]:
    result = run_cli("plugins", "--json")
    assert result.exit_code == 0, result.output
    return {p["name"]: p for p in json.loads(result.stdout)}


def test_plugin_set_has_builtins_and_the_given_plugins_but_nothing_else_installed():
    ps = plugin_set(Greeter())
    installed = {ep.name: ep.dist.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    builtins = {name for name, dist in installed.items() if dist == "ftp"}
    assert builtins <= set(ps.infos)
    assert set(ps.infos) - builtins == {"Greeter"}
    assert ps.registry.find("method", "echo").plugin == "Greeter"
    assert set(plugin_set(builtins=False).infos) == set()


def test_plugin_set_records_a_failing_plugin_or_raises_when_strict():
    ps = plugin_set(Broken(), builtins=False)
    assert ps.infos["Broken"].status == "error"
    assert ps.infos["Broken"].error == "ftp_methods() failed: RuntimeError: nope"
    with pytest.raises(UserError, match="Broken: ftp_methods"):
        plugin_set(Broken(), builtins=False, strict=True)


def test_plugin_is_registered_for_the_block_only():
    with plugin(Greeter(), name="greeter"):
        info = listed()["greeter"]
        assert (info["status"], info["distribution"]) == ("ok", "<in-process>")
        assert info["components"] == [{"kind": "method", "name": "echo"}]
        result = run_cli("greet")
        assert (result.exit_code, result.stdout) == (0, "hello from an in-process plugin\n")
    assert "greeter" not in listed()
    assert run_cli("greet").exit_code == 2  # the command went with the plugin


def test_an_in_process_plugin_replaces_an_installed_one_of_the_same_name():
    class MySFT(Method):
        """A replacement sft."""

        name = "sft"
        accepts = frozenset({Shape.CONVERSATIONAL})

    class Replacement:
        @hookimpl
        def ftp_methods(self):
            return [MySFT]

    with plugin(Replacement(), name="sft"):
        info = listed()["sft"]
        assert info["status"] == "ok" and info["distribution"] == "<in-process>"
    assert listed()["sft"]["distribution"] == "ftp"


PIPELINE = """
[pipeline]
name = "tiny"

[model]
path = "{model}"

[data.x]
loader = "json"
path = "rows.json"
format = "alpaca"

[[stages]]
name = "echo"
method = "{method}"
data = "x"

[[evaluate]]
evaluator = "loss"
data = "x"
split = "train"
before = true
"""


def test_run_pipeline_returns_what_the_run_directory_holds(tmp_path, tiny_model):
    rows = [{"instruction": "Hi?", "output": "Hello."}] * 3
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    run = run_pipeline(PIPELINE.format(model=tiny_model, method="echo"), tmp_path,
                       plugins=[Greeter()])
    assert run.run_dir == tmp_path / "run"
    assert run.status["status"] == "finished"
    assert json.loads((run.run_dir / "results.json").read_text()) == run.results
    # echo trains nothing: the loss after equals the loss before.
    assert run.metrics("echo", "loss")["loss"] == pytest.approx(run.metrics("base", "loss")["loss"])
    assert "evaluate 'loss' before training" in run.log
    with pytest.raises(ConfigError, match=r"stages\[0\].method: unknown method 'echo'"):
        run_pipeline(PIPELINE.format(model=tiny_model, method="echo"), tmp_path / "again")


def test_the_pytest_plugin_is_opt_in(tmp_path):
    assert not [ep for ep in entry_points(group="pytest11")
                if ep.value.startswith("ftp") or (ep.dist and ep.dist.name == "ftp")]
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not this repository's settings
    (tmp_path / "test_uses_fixtures.py").write_text(textwrap.dedent("""
        def test_cli(ftp_cli):
            assert ftp_cli("plugins").exit_code == 0
        """))

    def pytest_run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)

    without = pytest_run()
    assert without.returncode == 1
    assert "fixture 'ftp_cli' not found" in without.stdout
    enabled = pytest_run("-p", "ftp.pytest_plugin")
    assert enabled.returncode == 0, enabled.stdout
    assert "1 passed" in enabled.stdout


def test_fixtures_register_and_run(ftp_plugin, ftp_cli, tmp_path: Path):
    ftp_plugin(Greeter(), name="greeter")
    assert ftp_cli("greet").stdout == "hello from an in-process plugin\n"
