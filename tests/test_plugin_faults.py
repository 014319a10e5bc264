"""Plugin faults and control, through the real `ftp` command and a really installed distribution.

A distribution with five plugins — one that fails to import, one whose registration hook
raises, one that returns something that is not a component class, one that reuses a built-in
name, and a good one — is pip-installed into a folder on PYTHONPATH, so ftp finds them through
their entry points exactly as it finds any installed plugin. Lifecycle hooks are checked with
a recording plugin and a raising one on a real (tiny) `ftp run`.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ftp.testing import make_tiny_causal_lm, write_pipeline
from ftp.testing import run_ftp as ftp

FAULTY = {
    "badimport.py": "import frobnicate_not_installed  # noqa: F401\n",
    "hookraises.py": '''
        from ftp import hookimpl

        @hookimpl
        def ftp_methods():
            raise RuntimeError("boom in the hook")
        ''',
    "notaclass.py": '''
        from ftp import hookimpl

        class Scorer:
            """Looks like an evaluator, but is not an ftp.Evaluator."""
            name = "scorer"

        @hookimpl
        def ftp_evaluators():
            return [Scorer]
        ''',
    "dupe.py": '''
        from ftp import Evaluator, hookimpl

        class MyPerplexity(Evaluator):
            """Another perplexity."""
            name = "perplexity"

        @hookimpl
        def ftp_evaluators():
            return [MyPerplexity]
        ''',
    "good.py": '''
        from ftp import DataLoader, hookimpl

        class Fixed(DataLoader):
            """Two fixed rows."""
            name = "fixed-rows"

            def load(self, ctx):
                return [{"instruction": "Hi?", "output": "Hello."}] * 2

        @hookimpl
        def ftp_data_loaders():
            return [Fixed]
        ''',
}
ENTRY_POINTS = {"badimport": "badimport", "hookraises": "hookraises", "notaclass": "notaclass",
                "dupe": "dupe", "goodone": "good"}
FAULTY_NAMES = ["badimport", "dupe", "hookraises", "notaclass"]

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
method = "sft"
data = "x"
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ftp-faulty, built and installed with pip into a folder (put on PYTHONPATH)."""
    src = tmp_path_factory.mktemp("ftp-faulty")
    pkg = src / "src" / "ftp_faulty"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for name, code in FAULTY.items():
        (pkg / name).write_text(textwrap.dedent(code))
    eps = "\n".join(f'{k} = "ftp_faulty.{v}"' for k, v in ENTRY_POINTS.items())
    (src / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"

        [project]
        name = "ftp-faulty"
        version = "1.2.3"

        [project.entry-points."ftp.plugins"]
        """) + eps + '\n\n[tool.hatch.build.targets.wheel]\npackages = ["src/ftp_faulty"]\n')
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(src)],
                   check=True, capture_output=True, timeout=300)
    return target



def listed(*args: str, cwd: Path, site: Path, **env: str) -> dict[str, dict]:
    result = ftp(*args, "plugins", "--json", cwd=cwd, site=site, **env)
    assert result.returncode == 0, result.stderr
    return {p["name"]: p for p in json.loads(result.stdout)}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    rows = [{"instruction": "Who are you?", "output": "Nova."}]
    (tmp_path / "data.json").write_text(json.dumps(rows), encoding="utf-8")
    write_pipeline(tmp_path / "pipeline.toml", PIPELINE)
    return tmp_path


def problem_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("  - ")]


# -- each fault is shown by `ftp plugins`, and does not stop anything else -----------------


def test_ftp_plugins_shows_each_fault_with_status_and_reason(project, site):
    infos = listed(cwd=project, site=site)
    for name in FAULTY_NAMES:
        assert infos[name]["status"] == "error", infos[name]
        assert infos[name]["distribution"] == "ftp-faulty"
        assert infos[name]["version"] == "1.2.3"
        assert infos[name]["components"] == []
    assert infos["badimport"]["error"] == (
        "import failed: ModuleNotFoundError: No module named 'frobnicate_not_installed'")
    assert infos["hookraises"]["error"] == "ftp_methods() failed: RuntimeError: boom in the hook"
    assert "Scorer'> returned by a evaluator hook is not a Evaluator subclass" in \
        infos["notaclass"]["error"]
    assert infos["dupe"]["error"] == ("evaluator 'perplexity' is provided twice: by plugin "
                                      "'perplexity' (ftp) and by plugin 'dupe' (ftp-faulty)")
    assert infos["perplexity"]["status"] == "ok"  # the built-in keeps its name
    assert infos["goodone"]["status"] == "ok"
    assert infos["sft"]["status"] == "ok"

    text = ftp("plugins", cwd=project, site=site).stdout.splitlines()
    row = next(i for i, line in enumerate(text) if line.startswith("hookraises "))
    assert text[row].split() == ["hookraises", "error", "ftp-faulty", "1.2.3"]
    assert text[row + 1].strip() == "ftp_methods() failed: RuntimeError: boom in the hook"


def test_pipelines_not_using_a_broken_plugin_validate(project, site):
    result = ftp("validate", "pipeline.toml", cwd=project, site=site)
    assert result.returncode == 0, result.stderr
    # Loading warns, once per broken plugin, naming it.
    warned = [ln for ln in result.stderr.splitlines() if ln.startswith("warning: plugin ")]
    assert sorted(ln.split("'")[1] for ln in warned) == FAULTY_NAMES


def test_a_pipeline_using_a_name_provided_twice_fails_naming_both_and_what_to_do(project, site):
    (project / "notes.json").write_text(json.dumps([{"text": "Some notes."}] * 4))
    (project / "pipeline.toml").write_text(PIPELINE + textwrap.dedent('''
        [data.notes]
        loader = "json"
        path = "notes.json"
        format = "text"

        [[evaluate]]
        evaluator = "perplexity"
        data = "notes"
        split = "all"
        '''))
    result = ftp("validate", "pipeline.toml", cwd=project, site=site)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert problem_lines(result.stderr) == [
        "  - evaluate[0].evaluator: evaluator 'perplexity' is provided twice: by plugin "
        "'perplexity' (ftp) and by plugin 'dupe' (ftp-faulty); block the one you do not want "
        "with -p no:PLUGIN"]
    fixed = ftp("-p", "no:dupe", "validate", "pipeline.toml", cwd=project, site=site)
    assert fixed.returncode == 0, fixed.stderr


def test_a_pipeline_using_a_name_of_a_failed_plugin_says_what_to_do(project, site):
    (project / "pipeline.toml").write_text(PIPELINE.replace('"alpaca"', '"scorer"'))
    result = ftp("validate", "pipeline.toml", cwd=project, site=site)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = problem_lines(result.stderr)
    assert line.startswith("  - data.x.format: unknown format 'scorer'")
    assert "plugin 'notaclass' failed (" in line
    assert "fix or reinstall it, then check `ftp plugins`" in line


def test_strict_plugins_makes_every_fault_fatal(project, site):
    result = ftp("--strict-plugins", "validate", "pipeline.toml", cwd=project, site=site)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert line.startswith("error: plugin errors (--strict-plugins): ")
    for name in FAULTY_NAMES:
        assert f"{name}: " in line
    # Blocking the broken ones (-p no:) satisfies --strict-plugins.
    blocked = [arg for n in FAULTY_NAMES for arg in ("-p", f"no:{n}")]
    ok = ftp(*blocked, "--strict-plugins", "validate", "pipeline.toml", cwd=project, site=site)
    assert ok.returncode == 0, ok.stderr


# -- control: disable, allow-list, trace ----------------------------------------------------


def test_disable_by_environment_never_imports_the_plugin(project, site):
    infos = listed(cwd=project, site=site, FTP_DISABLE_PLUGINS="badimport,hookraises")
    assert infos["badimport"]["status"] == "blocked"
    assert infos["badimport"]["error"] == "blocked by -p no:badimport or FTP_DISABLE_PLUGINS"
    assert infos["hookraises"]["status"] == "blocked"
    assert infos["notaclass"]["status"] == "error"


@pytest.mark.parametrize("how", ["env", "option"])
def test_allow_list_keeps_third_party_plugins_out_but_not_builtins(project, site, how):
    if how == "env":
        infos = listed(cwd=project, site=site, FTP_ONLY_PLUGINS="goodone")
    else:
        infos = listed("--only-plugins", "goodone", cwd=project, site=site)
    assert infos["goodone"]["status"] == "ok"
    for name in FAULTY_NAMES:
        assert infos[name]["status"] == "blocked"
        assert infos[name]["error"] == "not in the allow-list (FTP_ONLY_PLUGINS / --only-plugins)"
    assert infos["sft"]["status"] == infos["data"]["status"] == "ok"
    # Nothing broken is loaded, so --strict-plugins is satisfied and the pipeline validates.
    (project / "pipeline.toml").write_text(
        PIPELINE.replace('loader = "json"\npath = "data.json"', 'loader = "fixed-rows"'))
    result = ftp("--strict-plugins", "validate", "pipeline.toml", cwd=project, site=site,
                 FTP_ONLY_PLUGINS="goodone")
    assert result.returncode == 0, result.stderr


def test_allow_list_naming_a_plugin_that_is_not_installed_is_an_error(project, site):
    result = ftp("plugins", cwd=project, site=site, FTP_ONLY_PLUGINS="goodon")
    assert result.returncode == 2
    assert result.stderr.splitlines()[0].startswith(
        "error: FTP_ONLY_PLUGINS/--only-plugins names 'goodon', which is not installed "
        "(did you mean 'goodone'?); installed: ")


def test_trace_hooks_prints_each_call_with_plugin_and_duration(project, site):
    result = ftp("plugins", cwd=project, site=site, FTP_TRACE_HOOKS="1")
    assert result.returncode == 0, result.stderr
    trace = [ln.split() for ln in result.stderr.splitlines() if ln.startswith("ftp trace: ")]
    calls = {(t[2], t[3]) for t in trace}
    assert ("ftp_methods", "plugin=sft") in calls
    assert ("ftp_data_loaders", "plugin=goodone") in calls
    assert ("ftp_methods", "plugin=hookraises") in calls
    raised = next(t for t in trace if t[3] == "plugin=hookraises")
    assert raised[4].endswith("ms") and float(raised[4][:-2]) >= 0
    assert raised[5:] == ["raised", "RuntimeError"]
    assert not any(ln.startswith("ftp trace") for ln in
                   ftp("plugins", cwd=project, site=site).stderr.splitlines())


# -- lifecycle hooks on a real run ----------------------------------------------------------

RECORDER = '''
import json
import os

from ftp import hookimpl

LOG = os.environ["RECORDER_LOG"]


def record(*event):
    with open(LOG, "a") as f:
        f.write(json.dumps(list(event)) + "\\n")


@hookimpl
def ftp_pipeline_start(pipeline, run_dir):
    record("ftp_pipeline_start", pipeline.name,
           json.load(open(run_dir / "run.json"))["status"])


@hookimpl
def ftp_dataset_ready(name, train, eval):
    record("ftp_dataset_ready", name, len(train))


@hookimpl
def ftp_model_loaded(stage):
    record("ftp_model_loaded", stage)


@hookimpl
def ftp_trainer_callbacks(stage):
    record("ftp_trainer_callbacks", stage)
    return []


@hookimpl
def ftp_evaluation_done(stage, evaluator):
    record("ftp_evaluation_done", stage, evaluator)


@hookimpl
def ftp_pipeline_finish(run_dir, results):
    record("ftp_pipeline_finish", sorted(results["stages"]),
           (run_dir / "model" / "config.json").is_file())


@hookimpl
def ftp_pipeline_error(step):
    record("ftp_pipeline_error", step)
'''

OBSERVER_RAISES = '''
from ftp import hookimpl


@hookimpl
def ftp_evaluation_done(stage):
    raise ValueError(f"cannot observe {stage}")


@hookimpl
def ftp_pipeline_finish(run_dir):
    (run_dir / "results.json").parent.joinpath("observer-was-here").touch()
    raise OSError("disk full in the observer")
'''

# A wrapper around a lifecycle hook, recording what it sees before and after the others ran.
WRAPPER = '''
import json
import os

from ftp import hookimpl

LOG = os.environ["RECORDER_LOG"]


def record(*event):
    with open(LOG, "a") as f:
        f.write(json.dumps(["wrapper", *event]) + "\\n")


@hookimpl(wrapper=True)
def ftp_pipeline_finish(run_dir):
    record("before", (run_dir / "observer-was-here").exists())
    result = yield
    record("after", (run_dir / "observer-was-here").exists())
    return result
'''

EARLY_RAISES = '''
from ftp import hookimpl


@hookimpl
def ftp_pipeline_start():
    raise RuntimeError("no tracking server")
'''

RUN_PIPELINE = """
[pipeline]
name = "observed"

[model]
path = "{model}"

[data.x]
loader = "json"
path = "data.json"
format = "alpaca"

[[stages]]
name = "train"
method = "sft"
data = "x"
max_steps = 1
batch_size = 2
logging_steps = 1

[[evaluate]]
evaluator = "loss"
data = "x"
split = "train"
before = true
"""


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory, site: Path) -> dict:
    """One tiny `ftp run` with the faulty distribution installed, a recorder and a raiser."""
    root = tmp_path_factory.mktemp("observed")
    rows = [{"instruction": f"Question {i}?", "output": f"Answer {i}."} for i in range(4)]
    (root / "data.json").write_text(json.dumps(rows))
    (root / "recorder.py").write_text(RECORDER)
    (root / "raiser.py").write_text(OBSERVER_RAISES)
    (root / "wrapper.py").write_text(WRAPPER)
    model = make_tiny_causal_lm(root / "model")
    write_pipeline(root / "pipeline.toml", RUN_PIPELINE.format(model=model))
    log = root / "events.jsonl"
    result = ftp("-p", "recorder.py", "-p", "raiser.py", "-p", "wrapper.py", "run",
                 "pipeline.toml", "-o", "run",
                 cwd=root, site=site, RECORDER_LOG=str(log), FTP_TRACE_HOOKS="1",
                 # Only ftp-faulty's plugins of the installed ones: other installed plugins
                 # (trackers) must not change what this run does.
                 FTP_ONLY_PLUGINS=",".join(ENTRY_POINTS))
    events = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    wrapped = [e[1:] for e in events if e[0] == "wrapper"]
    events = [e for e in events if e[0] != "wrapper"]
    return {"result": result, "events": events, "wrapped": wrapped, "run": root / "run"}


def test_lifecycle_hooks_are_called_in_the_documented_order(observed):
    assert observed["result"].returncode == 0, observed["result"].stderr
    assert observed["events"] == [
        ["ftp_pipeline_start", "observed", "running"],
        ["ftp_dataset_ready", "x", 4],
        ["ftp_model_loaded", "base"],
        ["ftp_evaluation_done", "base", "loss"],
        ["ftp_trainer_callbacks", "train"],
        ["ftp_model_loaded", "train"],
        ["ftp_evaluation_done", "train", "loss"],
        ["ftp_pipeline_finish", ["base", "train"], True],
    ]


def test_a_wrapper_around_a_lifecycle_hook_runs_before_and_after_the_others(observed):
    assert observed["result"].returncode == 0, observed["result"].stderr
    # The raiser's ftp_pipeline_finish leaves a file, then raises: the wrapper sees the
    # file only after it yielded, and the raise did not stop its second half.
    assert observed["wrapped"] == [["before", False], ["after", True]]


def test_a_raising_observer_is_reported_and_the_run_is_intact(observed):
    result, run = observed["result"], observed["run"]
    assert result.returncode == 0, result.stderr
    warnings = [ln for ln in result.stderr.splitlines() if "failed in ftp_" in ln]
    assert warnings == [
        "warning: plugin 'raiser' failed in ftp_evaluation_done: ValueError: cannot observe "
        "base; ignored, the run goes on (--strict-plugins makes this fatal)",
        "warning: plugin 'raiser' failed in ftp_evaluation_done: ValueError: cannot observe "
        "train; ignored, the run goes on (--strict-plugins makes this fatal)",
        "warning: plugin 'raiser' failed in ftp_pipeline_finish: OSError: disk full in the "
        "observer; ignored, the run goes on (--strict-plugins makes this fatal)",
    ]
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "finished"
    assert status["plugin_hook_failures"] == [w.removeprefix("warning: ").split(";")[0]
                                              for w in warnings]
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "finished"
    assert set(results["stages"]) == {"base", "train"}
    assert results["stages"]["train"]["loss"]["metrics"]["loss"] > 0
    assert (run / "model" / "config.json").is_file() and (run / "summary.md").is_file()
    assert (run / "observer-was-here").is_file()  # the raiser did run


def test_trace_covers_lifecycle_hooks_of_a_run(observed):
    trace = [ln.split() for ln in observed["result"].stderr.splitlines()
             if ln.startswith("ftp trace: ")]
    assert ["ftp_pipeline_start", "plugin=recorder"] in [t[2:4] for t in trace]
    finish = [t for t in trace if t[2] == "ftp_pipeline_finish"]
    # Every test plugin's finish hook is traced (built-ins that observe the finish, such as
    # export's artifacts, are traced too).
    assert {"plugin=recorder", "plugin=raiser", "plugin=wrapper"} <= {t[3] for t in finish}
    assert next(t for t in finish if t[3] == "plugin=raiser")[5:] == ["raised", "OSError"]


def test_strict_plugins_makes_a_raising_lifecycle_hook_fail_the_run(project, site):
    (project / "early.py").write_text(EARLY_RAISES)
    only = {"FTP_ONLY_PLUGINS": "goodone"}  # no broken plugin, no other installed ones
    result = ftp("--strict-plugins", "-p", "early.py", "run", "pipeline.toml", "-o", "run",
                 cwd=project, site=site, **only)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert ("error: plugin 'early' failed in ftp_pipeline_start: RuntimeError: no tracking "
            "server (--strict-plugins)") in result.stderr
    status = json.loads((project / "run" / "run.json").read_text())
    assert status["status"] == "failed"
    # Without --strict-plugins the same hook is only a warning; the run then goes on (and
    # here fails later, at loading the made-up model, which is not the plugin's doing).
    relaxed = ftp("-p", "early.py", "run", "pipeline.toml", "-o", "run2", cwd=project,
                  site=site, **only)
    assert "warning: plugin 'early' failed in ftp_pipeline_start" in relaxed.stderr
    assert "some-model" in relaxed.stderr


def test_two_distributions_claiming_one_plugin_name_are_both_named(tmp_path):
    site = tmp_path / "site"
    for dist in ("ftp-one", "ftp-two"):
        src = tmp_path / dist
        pkg = src / dist.replace("-", "_")
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (src / "pyproject.toml").write_text(textwrap.dedent(f"""
            [build-system]
            requires = ["hatchling"]
            build-backend = "hatchling.build"

            [project]
            name = "{dist}"
            version = "1.0"

            [project.entry-points."ftp.plugins"]
            same = "{dist.replace("-", "_")}"
            """))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--no-build-isolation", "--target", str(site), str(src)],
                       check=True, capture_output=True, timeout=300)
    infos = listed(cwd=tmp_path, site=site)
    [kept] = [i for i in infos.values() if i["name"] == "same"]
    [refused] = [i for i in infos.values() if i["name"].startswith("same (")]
    assert kept["status"] == "ok" and refused["status"] == "error"
    assert {kept["distribution"], refused["distribution"]} == {"ftp-one", "ftp-two"}
    assert refused["name"] == f"same ({refused['distribution']})"
    assert refused["error"] == (f"plugin name 'same' is already used by distribution "
                                f"'{kept['distribution']}'; uninstall one of them")
