"""Plugin settings: declared with ``ftp_plugin_settings``, set in ``[plugins.NAME]``.

Every test goes through the real ``ftp`` command line with plugin files loaded by
``-p path/to/plugin.py``, as a user would load a plugin of their own.
"""

import json
import textwrap
from pathlib import Path

import pytest

from ftp.testing import run_cli, write_pipeline

# Declares settings and records, at pipeline start, the settings it was given.
RECORDER = '''
import json

from pydantic import Field

from ftp import StrictConfig, hookimpl


class {cls}(StrictConfig):
    """Settings of a recording plugin."""

    label: str = Field("unlabelled", description="What to call the run.")
    repeats: int = Field(1, ge=1, description="How many times.")
    loud: bool = False


@hookimpl
def ftp_plugin_settings():
    return {cls}


@hookimpl
def ftp_pipeline_start(pipeline, run_dir):
    mine = pipeline.plugin_settings["{name}"]
    assert isinstance(mine, {cls})
    (run_dir / "{name}-seen.json").write_text(json.dumps(mine.model_dump()))
'''

NO_SETTINGS = '''
from ftp import hookimpl


@hookimpl
def ftp_pipeline_finish(run_dir):
    pass
'''

FAULTY = {
    "raises": '''
        from ftp import hookimpl

        @hookimpl
        def ftp_plugin_settings():
            raise RuntimeError("settings exploded")
        ''',
    "notconfig": '''
        from pydantic import BaseModel

        from ftp import hookimpl

        class Loose(BaseModel):
            x: int = 1

        @hookimpl
        def ftp_plugin_settings():
            return Loose
        ''',
    "nodefault": '''
        from ftp import StrictConfig, hookimpl

        class Needy(StrictConfig):
            token: str

        @hookimpl
        def ftp_plugin_settings():
            return Needy
        ''',
}

ROWS = [{"instruction": f"Say {i}.", "input": "", "output": f"{i}."} for i in range(4)]


def pipeline_text(model: str = "some-model", extra: str = "", steps: int = 1) -> str:
    return f"""
        [pipeline]
        name = "settings-demo"

        [model]
        path = "{model}"

        [data.x]
        loader = "json"
        path = "data.json"
        format = "alpaca"

        [[stages]]
        method = "sft"
        data = "x"
        max_steps = {steps}
        batch_size = 2
        max_length = 32
        """ + textwrap.dedent(extra)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder with data and the plugin files ``tagger.py``, ``quiet.py``, ``plain.py``."""
    (tmp_path / "data.json").write_text(json.dumps(ROWS), encoding="utf-8")
    (tmp_path / "tagger.py").write_text(RECORDER.format(cls="TaggerSettings", name="tagger"))
    (tmp_path / "quiet.py").write_text(RECORDER.format(cls="QuietSettings", name="quiet"))
    (tmp_path / "plain.py").write_text(NO_SETTINGS)
    for name, code in FAULTY.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(code))
    return tmp_path


def plugin_args(project: Path, *names: str) -> list[str]:
    """``-p`` for each plugin file; installed third-party plugins stay out (``--only-plugins``),
    so what else is installed cannot change what these tests see."""
    return ["--only-plugins", "", *[a for n in names for a in ("-p", str(project / f"{n}.py"))]]


def validate(project: Path, extra: str, *plugins: str):
    pipeline = write_pipeline(project / "pipeline.toml", pipeline_text(extra=extra))
    return run_cli(*plugin_args(project, *plugins), "validate", str(pipeline))


def problems(result) -> list[str]:
    """Exit 2, no traceback, a header and one line per problem on stderr; return those lines."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    # A plugin that failed to load is a warning line of its own, before the error.
    out = [line for line in result.stderr.strip().splitlines()
           if not line.startswith("warning: ")]
    header, *lines = out
    assert header.endswith(f"{len(lines)} problem{'s' if len(lines) > 1 else ''} in the pipeline")
    assert all(line.startswith("  - ") for line in lines), result.stderr
    return [line[4:] for line in lines]


def one_line_error(result) -> str:
    """Exit 2 with exactly one problem, on one line; return it."""
    found = problems(result)
    assert len(found) == 1, result.stderr
    return found[0]


# -- a real run -------------------------------------------------------------------------------


def test_settings_reach_the_hooks_and_resolved_json_defaults_without_a_table(project,
                                                                             tiny_model):
    pipeline = write_pipeline(project / "pipeline.toml", pipeline_text(
        model=tiny_model.as_posix(),
        extra="""
            [plugins.tagger]
            label = "trial-7"
            repeats = 3
            """))
    run_dir = project / "run"

    result = run_cli(*plugin_args(project, "tagger", "quiet"), "run", str(pipeline),
                     "--output-dir", str(run_dir))

    assert result.exit_code == 0, result.output
    assert "failed in ftp_pipeline_start" not in result.output
    tagger = json.loads((run_dir / "tagger-seen.json").read_text())
    assert tagger == {"label": "trial-7", "repeats": 3, "loud": False}
    # A plugin with settings but no table gets its defaults.
    quiet = json.loads((run_dir / "quiet-seen.json").read_text())
    assert quiet == {"label": "unlabelled", "repeats": 1, "loud": False}
    resolved = json.loads((run_dir / "resolved.json").read_text())
    # ftp's built-in export plugin declares settings too (artifacts a run ends with).
    assert resolved["plugins"] == {"tagger": tagger, "quiet": quiet,
                                   "export": {"artifacts": []}}


def test_set_overrides_a_setting_and_validate_accepts_it(project):
    pipeline = write_pipeline(project / "pipeline.toml",
                              pipeline_text(extra="[plugins.tagger]\nrepeats = 2\n"))

    result = run_cli(*plugin_args(project, "tagger"), "validate", str(pipeline),
                     "--set", "plugins.tagger.loud=true")

    assert result.exit_code == 0, result.output


# -- mistakes in the table: one line each, exit 2 -------------------------------------------


def test_a_bad_value_is_named_by_its_path(project):
    line = one_line_error(validate(project, '[plugins.tagger]\nrepeats = "many"\n', "tagger"))
    assert line.startswith("plugins.tagger.repeats: ")
    assert "'many'" in line


def test_an_out_of_range_value_is_named_by_its_path(project):
    line = one_line_error(validate(project, "[plugins.tagger]\nrepeats = 0\n", "tagger"))
    assert line.startswith("plugins.tagger.repeats: ")
    assert "greater than or equal to 1" in line


def test_an_unknown_key_suggests_the_setting_meant(project):
    line = one_line_error(validate(project, '[plugins.tagger]\nlabl = "x"\n', "tagger"))
    assert line == "plugins.tagger.labl: unknown key (did you mean 'label'?)"


def test_an_unknown_plugin_lists_the_plugins_that_take_settings(project):
    line = one_line_error(validate(project, '[plugins.tager]\nlabel = "x"\n', "tagger", "quiet"))
    assert line.startswith("plugins.tager: no plugin named 'tager' (did you mean 'tagger'?)")
    assert "plugins that take settings: " in line
    listed = line.split("plugins that take settings: ")[1].split(", ")
    assert {"quiet", "tagger"} <= set(listed)


def test_a_plugin_that_declares_no_settings_is_told_so(project):
    line = one_line_error(validate(project, "[plugins.plain]\nx = 1\n", "plain"))
    assert line == "plugins.plain: plugin 'plain' declares no settings; remove the table"


def test_a_blocked_plugins_table_says_it_is_blocked(project):
    pipeline = write_pipeline(project / "pipeline.toml",
                              pipeline_text(extra='[plugins.tagger]\nlabel = "x"\n'))
    result = run_cli("-p", "no:tagger", *plugin_args(project, "tagger"), "validate",
                     str(pipeline))
    line = one_line_error(result)
    assert line.startswith("plugins.tagger: plugin 'tagger' is blocked by -p no:tagger")


def test_a_faulty_plugins_table_says_why_it_failed(project):
    result = validate(project, "[plugins.raises]\nx = 1\n", "raises")
    assert "warning: plugin 'raises' failed to load" in result.stderr
    line = one_line_error(result)
    assert line.startswith("plugins.raises: plugin 'raises' failed (ftp_plugin_settings() "
                           "failed: RuntimeError: settings exploded)")


def test_plugins_written_as_a_list_points_to_pipeline_plugins(project):
    pipeline = write_pipeline(project / "pipeline.toml",
                              'plugins = ["tagger.py"]\n' + pipeline_text())
    line = one_line_error(run_cli("validate", str(pipeline)))
    assert line.startswith("plugins: expected tables [plugins.NAME]")
    assert "[pipeline] plugins" in line


def test_every_problem_is_reported_at_once(project):
    result = validate(project, '[plugins.tagger]\nrepeats = "x"\nloud = "maybe"\n'
                      "[plugins.nosuch]\n", "tagger")
    paths = sorted(line.split(":")[0] for line in problems(result))
    assert paths == ["plugins.nosuch", "plugins.tagger.loud", "plugins.tagger.repeats"]


def test_pipeline_plugins_still_loads_a_plugin_whose_table_is_checked(project):
    """``[pipeline] plugins`` loads modules; ``[plugins.NAME]`` configures them: both at once."""
    pipeline = write_pipeline(project / "pipeline.toml", pipeline_text().replace(
        'name = "settings-demo"', 'name = "settings-demo"\nplugins = ["tagger.py"]')
        + "[plugins.tagger]\nrepeats = 0\n")
    line = one_line_error(run_cli("validate", str(pipeline), "--allow-code"))
    assert line.startswith("plugins.tagger.repeats: ")


# -- faulty declarations are plugin faults ----------------------------------------------------


def test_faulty_settings_declarations_fail_only_their_plugin(project):
    result = run_cli(*plugin_args(project, "raises", "notconfig", "nodefault", "tagger"),
                     "plugins", "--json")

    assert result.exit_code == 0, result.output
    infos = {i["name"]: i for i in json.loads(result.stdout)}
    assert infos["raises"]["status"] == "error"
    assert "ftp_plugin_settings() failed: RuntimeError: settings exploded" in \
        infos["raises"]["error"]
    assert infos["notconfig"]["status"] == "error"
    assert "not an ftp.StrictConfig subclass" in infos["notconfig"]["error"]
    assert infos["nodefault"]["status"] == "error"
    assert "'token' has no default" in infos["nodefault"]["error"]
    assert infos["tagger"]["status"] == "ok"
    assert infos["tagger"]["settings"] == ["label", "repeats", "loud"]


def test_plugins_lists_the_settings_and_schema_describes_them(project):
    listed = run_cli(*plugin_args(project, "tagger"), "plugins")
    assert listed.exit_code == 0, listed.output
    assert "[plugins.tagger] label, repeats, loud" in listed.stdout

    schema = run_cli(*plugin_args(project, "tagger"), "schema")
    assert schema.exit_code == 0, schema.output
    tables = json.loads(schema.stdout)["properties"]["plugins"]
    assert tables["additionalProperties"] is False
    tagger = tables["properties"]["tagger"]
    assert tagger["properties"]["label"]["description"] == "What to call the run."
    assert tagger["additionalProperties"] is False


def test_settings_under_pipeline_plugins_point_to_the_top_level_table(project):
    pipeline = write_pipeline(project / "pipeline.toml", pipeline_text().replace(
        'name = "settings-demo"', 'name = "settings-demo"\n[pipeline.plugins.tagger]\n'
        'label = "x"\n'))
    line = one_line_error(run_cli(*plugin_args(project, "tagger"), "validate", str(pipeline)))
    assert line == ("pipeline.plugins: is the list of local plugin modules to load; plugin "
                    "settings go in a top-level [plugins.NAME] table")
