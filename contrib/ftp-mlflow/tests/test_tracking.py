"""ftp-mlflow against real MLflow stores, run through the ``ftp`` command line.

Each test runs a real pipeline on a tiny random model (a few steps on a few rows) with the
installed plugin, then reads what was logged back through MLflow's own client. Creating a
SQLite store runs MLflow's schema migrations (seconds), so the tests that name a store share
one, each in its own experiment.
"""

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftp import UserError
from ftp.cli import cli
from ftp.testing import make_tiny_causal_lm, write_pipeline

# These tests are of the installed distribution, as a user has it.
ftp_mlflow = pytest.importorskip(
    "ftp_mlflow", reason="ftp-mlflow is not installed: pip install ./contrib/ftp-mlflow",
    exc_type=ModuleNotFoundError,
)
from mlflow import MlflowClient  # noqa: E402  (only once the plugin is known to be installed)

from ftp_mlflow.names import config_params, numeric_metrics  # noqa: E402
from ftp_mlflow.settings import MlflowSettings, read_settings, tracking_enabled  # noqa: E402

os.environ["HF_HUB_OFFLINE"] = "1"

ROWS = [{"instruction": f"What is {i} plus {i}?", "input": "", "output": f"It is {2 * i}."}
        for i in range(8)]

BOOM_PLUGIN = """
from ftp import Evaluator, hookimpl


class Boom(Evaluator):
    name = "boom"

    def evaluate(self, ctx):
        raise RuntimeError("the evaluator broke")


@hookimpl
def ftp_evaluators():
    return [Boom]
"""

# Breaks the tracking store once the model is loaded, i.e. after the MLflow run has started
# and before training logs its first step.
BREAK_STORE_PLUGIN = """
import os

from ftp import hookimpl


@hookimpl
def ftp_model_loaded(stage):
    if stage == "base":
        db = os.path.join(os.path.dirname(__file__), "mlruns", "mlflow.db")
        with open(db, "r+b") as fh:
            fh.write(b"this is no longer a database" * 200)
"""

OPTIONS = ("FTP_MLFLOW", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "FTP_MLFLOW_RUN_NAME",
           "FTP_MLFLOW_LOG_MODEL", "FTP_DISABLE_PLUGINS", "FTP_PLUGINS")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No option leaks in from the caller's environment; tiny models train fastest on 1 thread."""
    import torch

    for name in OPTIONS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_causal_lm(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> str:
    """A SQLite tracking URI shared by the tests that set MLFLOW_TRACKING_URI."""
    return "sqlite:///" + (tmp_path_factory.mktemp("store") / "mlflow.db").as_posix()


def project(tmp_path: Path, model: Path, name: str, *, steps: int = 3, evaluate: str = "",
            extra_plugins: tuple[str, ...] = (), table: str = "") -> Path:
    """A pipeline file with its data in ``tmp_path/project``; return the file.

    ``table`` is the body of a ``[plugins.mlflow]`` table, added when given.
    """
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "qa.json").write_text(json.dumps(ROWS), encoding="utf-8")
    (folder / "boom.py").write_text(BOOM_PLUGIN, encoding="utf-8")
    (folder / "break_store.py").write_text(BREAK_STORE_PLUGIN, encoding="utf-8")
    plugins = [p for p in ("boom", "break_store") if p in evaluate or p in extra_plugins]
    plugins = json.dumps([f"{p}.py" for p in plugins])
    return write_pipeline(folder / "pipeline.toml", f"""
        [pipeline]
        name = "{name}"
        description = "tracked by ftp-mlflow"
        plugins = {plugins}

        [model]
        path = "{model.as_posix()}"

        [data.qa]
        loader = "json"
        path = "qa.json"
        format = "alpaca"
        eval_fraction = 0.25

        [[stages]]
        method = "sft"
        data = "qa"
        max_steps = {steps}
        batch_size = 2
        max_length = 64
        logging_steps = 1
        learning_rate = 0.001
        {evaluate}
    """ + (f"\n[plugins.mlflow]\n{table}" if table else ""))


def ftp_run(pipeline: Path, run_dir: Path, *extra: str):
    # The pipelines here load their helper plugins (boom.py...) from [pipeline] plugins.
    return CliRunner().invoke(cli, ["run", str(pipeline), "--output-dir", str(run_dir),
                                    "--allow-code", *extra])


def the_run(client: MlflowClient, experiment: str):
    """The one run of ``experiment``."""
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    runs = client.search_runs([found.experiment_id])
    assert len(runs) == 1
    return runs[0]


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, path)}


# -- a whole run ----------------------------------------------------------------------------


LOSS_BEFORE_AND_AFTER = """
[[evaluate]]
evaluator = "loss"
data = "qa"
before = true
"""


def test_a_run_is_tracked_in_the_default_store_beside_the_pipeline(tmp_path, tiny_model,
                                                                   monkeypatch):
    pipeline = project(tmp_path, tiny_model, "tracked", evaluate=LOSS_BEFORE_AND_AFTER)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the default store follows the pipeline file, not the cwd
    monkeypatch.setenv("FTP_MLFLOW", "1")
    run_dir = tmp_path / "out" / "first"

    result = ftp_run(pipeline, run_dir)

    assert result.exit_code == 0, result.output
    assert "plugin 'mlflow'" not in result.output
    db = pipeline.parent / "mlruns" / "mlflow.db"
    assert db.is_file()
    assert not (elsewhere / "mlruns").exists() and not (elsewhere / "mlflow.db").exists()
    client = MlflowClient("sqlite:///" + db.as_posix())
    run = the_run(client, "tracked")
    assert run.info.status == "FINISHED"
    # The terminal says where the run was tracked.
    assert (f"mlflow: tracking experiment 'tracked', run {run.info.run_id}, in sqlite:///"
            in result.output)
    assert run.info.run_name == "first"
    assert run.data.tags["ftp.run_dir"] == str(run_dir.resolve())
    assert run.data.tags["mlflow.note.content"] == "tracked by ftp-mlflow"

    # params: the resolved config, every stage option under the stage's name
    params = run.data.params
    resolved = json.loads((run_dir / "resolved.json").read_text())
    stage = resolved["stages"][0]
    for key, value in stage.items():
        if key != "name" and not isinstance(value, dict):
            expected = value if isinstance(value, str) else json.dumps(value)
            assert params[f"stages.sft.{key}"] == expected, key
    assert params["stages.sft.learning_rate"] == "0.001"
    assert params["model.path"] == tiny_model.as_posix()
    assert params["data.qa.format"] == "alpaca"
    assert params["evaluate.loss.before"] == "true"
    assert params["pipeline.seed"] == "42"
    assert (params["rows.qa.train"], params["rows.qa.eval"]) == ("6", "2")

    # per-step training metrics: the same losses ftp wrote to metrics.jsonl, at their steps
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [(r["step"], r["loss"]) for r in records if "loss" in r and "step" in r]
    history = sorted(client.get_metric_history(run.info.run_id, "sft/train/loss"),
                     key=lambda m: m.step)
    assert [m.step for m in history] == [s for s, _ in logged] == [1, 2, 3]
    assert [m.value for m in history] == pytest.approx([v for _, v in logged])
    assert "sft/train/learning_rate" in run.data.metrics
    assert "sft/train/train_runtime" in run.data.metrics

    # evaluation metrics, stage-prefixed, and as one series over stages
    results = json.loads((run_dir / "results.json").read_text())
    before = results["stages"]["base"]["loss"]["metrics"]
    after = results["stages"]["sft"]["loss"]["metrics"]
    assert run.data.metrics["base/loss/loss"] == pytest.approx(before["loss"])
    assert run.data.metrics["sft/loss/perplexity"] == pytest.approx(after["perplexity"])
    series = sorted(client.get_metric_history(run.info.run_id, "eval/loss/loss"),
                    key=lambda m: m.step)
    assert [m.step for m in series] == [0, 1]
    assert [m.value for m in series] == pytest.approx([before["loss"], after["loss"]])

    # artifacts: the run's records, byte for byte, stored beside the database; no model
    assert {"results.json", "summary.md", "pipeline.toml", "resolved.json"} <= \
        artifact_paths(client, run.info.run_id)
    assert "model" not in artifact_paths(client, run.info.run_id)
    copy = Path(client.download_artifacts(run.info.run_id, "results.json", str(tmp_path)))
    assert copy.read_bytes() == (run_dir / "results.json").read_bytes()
    assert run.info.artifact_uri.startswith((pipeline.parent / "mlruns" / "artifacts").as_uri())


def test_options_choose_the_store_experiment_run_name_and_model_upload(tmp_path, tiny_model,
                                                                      store, monkeypatch):
    pipeline = project(tmp_path, tiny_model, "options", steps=1)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "chosen experiment")
    monkeypatch.setenv("FTP_MLFLOW_RUN_NAME", "trial-1")
    monkeypatch.setenv("FTP_MLFLOW_LOG_MODEL", "yes")

    result = ftp_run(pipeline, tmp_path / "run")

    assert result.exit_code == 0, result.output
    assert not (pipeline.parent / "mlruns").exists()
    client = MlflowClient(store)
    assert client.get_experiment_by_name("options") is None
    run = the_run(client, "chosen experiment")
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "trial-1"
    assert "model" in artifact_paths(client, run.info.run_id)
    model_files = artifact_paths(client, run.info.run_id, "model")
    assert {"model/config.json", "model/tokenizer.json"} <= model_files
    assert any(p.endswith(".safetensors") for p in model_files)


def test_the_plugins_table_alone_turns_tracking_on_and_sets_the_options(tmp_path, tiny_model,
                                                                        store):
    pipeline = project(tmp_path, tiny_model, "tabled", steps=1, table=f"""
enabled = true
tracking_uri = "{store}"
experiment = "from the table"
run_name = "table-run"
log_model = true
""")

    result = ftp_run(pipeline, tmp_path / "run")

    assert result.exit_code == 0, result.output
    assert not (pipeline.parent / "mlruns").exists()
    client = MlflowClient(store)
    assert client.get_experiment_by_name("tabled") is None
    run = the_run(client, "from the table")
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "table-run"
    assert "model" in artifact_paths(client, run.info.run_id)
    resolved = json.loads((tmp_path / "run" / "resolved.json").read_text())
    assert resolved["plugins"]["mlflow"]["experiment"] == "from the table"


def test_a_bad_setting_in_the_table_is_one_validation_line(tmp_path, tiny_model):
    pipeline = project(tmp_path, tiny_model, "bad-setting", table='log_model = "sure"\n')

    result = CliRunner().invoke(cli, ["validate", str(pipeline)])

    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    header, *problems = result.stderr.strip().splitlines()
    assert header.endswith("1 problem in the pipeline")
    assert len(problems) == 1
    assert problems[0].startswith("  - plugins.mlflow.log_model: Input should be a valid boolean")
    assert problems[0].endswith("(got 'sure')")
    assert not (pipeline.parent / "mlruns").exists()


def test_without_opting_in_nothing_is_tracked(tmp_path, tiny_model):
    pipeline = project(tmp_path, tiny_model, "untracked", steps=1)

    result = ftp_run(pipeline, tmp_path / "run")

    assert result.exit_code == 0, result.output
    assert "plugin 'mlflow'" not in result.output
    assert not (pipeline.parent / "mlruns").exists()
    assert not (tmp_path / "run" / "mlruns").exists()


# -- failures -------------------------------------------------------------------------------


def test_a_failed_run_ends_failed_with_the_step_and_keeps_what_was_logged(tmp_path, tiny_model,
                                                                          store, monkeypatch):
    pipeline = project(tmp_path, tiny_model, "fails",
                       evaluate='[[evaluate]]\nevaluator = "boom"\n')
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)

    result = ftp_run(pipeline, tmp_path / "run")

    assert result.exit_code != 0
    assert "the evaluator broke" in result.output
    client = MlflowClient(store)
    run = the_run(client, "fails")
    assert run.info.status == "FAILED"
    assert run.data.tags["ftp.failed_step"] == "evaluate 'boom' after 'sft'"
    assert "the evaluator broke" in run.data.tags["ftp.error"]
    assert len(client.get_metric_history(run.info.run_id, "sft/train/loss")) == 3
    assert {"results.json", "summary.md", "pipeline.toml"} <= \
        artifact_paths(client, run.info.run_id)


def test_an_unusable_store_is_reported_and_the_run_still_finishes(tmp_path, tiny_model,
                                                                 monkeypatch):
    pipeline = project(tmp_path, tiny_model, "unreachable", steps=1)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://tracking.invalid")

    result = ftp_run(pipeline, tmp_path / "run")

    assert result.exit_code == 0, result.output
    assert "warning: plugin 'mlflow': cannot start an MLflow run at " \
           "nosuchscheme://tracking.invalid" in result.output
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "finished"
    assert (tmp_path / "run" / "model" / "config.json").is_file()


def test_a_store_that_breaks_mid_run_stops_tracking_but_not_training(tmp_path, tiny_model,
                                                                     monkeypatch):
    pipeline = project(tmp_path, tiny_model, "breaks", extra_plugins=("break_store",))
    monkeypatch.setenv("FTP_MLFLOW", "1")

    result = ftp_run(pipeline, tmp_path / "run")

    assert result.exit_code == 0, result.output
    assert result.output.count("warning: plugin 'mlflow'") == 1
    assert "MLflow tracking stops here, the run goes on" in result.output
    status = json.loads((tmp_path / "run" / "run.json").read_text())
    assert status["status"] == "finished"
    assert not status.get("plugin_hook_failures")
    assert "sft step 3/3" in result.output


# -- the pieces -----------------------------------------------------------------------------


def test_tracking_is_on_with_ftp_mlflow_or_a_tracking_uri_and_off_with_ftp_mlflow_0():
    assert not tracking_enabled({})
    assert tracking_enabled({"FTP_MLFLOW": "1"})
    assert tracking_enabled({"MLFLOW_TRACKING_URI": "http://h:5000"})
    assert not tracking_enabled({"MLFLOW_TRACKING_URI": "http://h:5000", "FTP_MLFLOW": "off"})
    with pytest.raises(UserError, match="FTP_MLFLOW='sure'"):
        tracking_enabled({"FTP_MLFLOW": "sure"})


def test_environment_variables_win_over_the_table_which_wins_over_defaults(tmp_path):
    table = MlflowSettings(tracking_uri="http://table:5000", experiment="table-exp",
                           run_name="table-run", log_model=True)
    from_table = read_settings("p", tmp_path, tmp_path / "run", env={}, table=table)
    assert (from_table.tracking_uri, from_table.experiment, from_table.run_name,
            from_table.log_model) == ("http://table:5000", "table-exp", "table-run", True)
    env = {"MLFLOW_TRACKING_URI": "http://env:5000", "MLFLOW_EXPERIMENT_NAME": "env-exp",
           "FTP_MLFLOW_RUN_NAME": "env-run", "FTP_MLFLOW_LOG_MODEL": "0"}
    from_env = read_settings("p", tmp_path, tmp_path / "run", env=env, table=table)
    assert (from_env.tracking_uri, from_env.experiment, from_env.run_name,
            from_env.log_model) == ("http://env:5000", "env-exp", "env-run", False)
    # enabled: FTP_MLFLOW, then the table, then whether a tracking URI is given anywhere
    assert tracking_enabled({}, MlflowSettings(enabled=True))
    assert not tracking_enabled({"FTP_MLFLOW": "0"}, MlflowSettings(enabled=True))
    assert tracking_enabled({"FTP_MLFLOW": "1"}, MlflowSettings(enabled=False))
    assert not tracking_enabled({"MLFLOW_TRACKING_URI": "http://h:5000"},
                                MlflowSettings(enabled=False))
    assert tracking_enabled({}, MlflowSettings(tracking_uri="http://h:5000"))


def test_a_relative_sqlite_path_in_the_table_is_relative_to_the_pipeline_file(tmp_path):
    table = MlflowSettings(tracking_uri="sqlite:///store/runs.db")
    s = read_settings("p", tmp_path, tmp_path / "run", env={}, table=table)
    assert s.tracking_uri == "sqlite:///" + (tmp_path / "store" / "runs.db").as_posix()
    absolute = MlflowSettings(tracking_uri="sqlite:////srv/mlflow.db")
    assert read_settings("p", tmp_path, tmp_path, env={}, table=absolute).tracking_uri == (
        "sqlite:////srv/mlflow.db")
    # In the environment it is MLflow's own: relative to the working directory, untouched.
    env = {"MLFLOW_TRACKING_URI": "sqlite:///store/runs.db"}
    assert read_settings("p", tmp_path, tmp_path, env=env).tracking_uri == "sqlite:///store/runs.db"


def test_a_wrong_log_model_value_names_the_variable(tmp_path):
    with pytest.raises(UserError, match="FTP_MLFLOW_LOG_MODEL='maybe'"):
        read_settings("p", tmp_path, tmp_path / "run", env={"FTP_MLFLOW_LOG_MODEL": "maybe"})


def test_default_settings_put_the_store_and_its_artifacts_beside_the_pipeline(tmp_path):
    s = read_settings("p", tmp_path, tmp_path / "runs" / "p", env={})
    assert s.tracking_uri == "sqlite:///" + (tmp_path / "mlruns" / "mlflow.db").as_posix()
    assert s.artifact_location == (tmp_path / "mlruns" / "artifacts").as_uri()
    assert (s.experiment, s.run_name, s.log_model) == ("p", "p", False)
    remote = read_settings("p", tmp_path, tmp_path, env={"MLFLOW_TRACKING_URI": "http://h:5000"})
    assert remote.artifact_location is None  # a server decides where artifacts go


def test_param_names_are_cleaned_and_long_values_cut():
    resolved = {"raw": {"pipeline": {"name": "p"}},
                "data": {"d": {"placeholders": {"who?": "x" * 7000}, "limit": None}},
                "stages": [{"name": "a", "adapter": {"r": 8}}],
                "evaluate": [{"name": None, "batch_size": 4}]}
    params = config_params(resolved, 7, ["a"], ["loss"])
    assert params["data.d.placeholders.who_"].endswith("…")
    assert len(params["data.d.placeholders.who_"]) == 6000
    assert params["data.d.limit"] == "null"
    assert params["stages.a.adapter.r"] == "8"
    assert params["evaluate.loss.batch_size"] == "4"
    assert params["pipeline.seed"] == "7"


def test_only_numbers_become_metrics():
    metrics = numeric_metrics({"accuracy": 0.5, "n": 3, "label": "x", "per_class": {"pos": 1.0},
                               "samples": [1, 2], "ok": True}, "sft/cls")
    assert metrics == {"sft/cls/accuracy": 0.5, "sft/cls/n": 3.0, "sft/cls/per_class/pos": 1.0,
                       "sft/cls/ok": 1.0}


# -- secrets ----------------------------------------------------------------------------------

SECRET = "hunter2"


def files_holding(folder: Path, text: str) -> list[str]:
    """The files under ``folder`` whose bytes contain ``text``."""
    return [str(p.relative_to(folder)) for p in folder.rglob("*")
            if p.is_file() and text.encode() in p.read_bytes()]


def test_a_password_in_the_tracking_uri_is_masked_everywhere_it_is_written(tmp_path, tiny_model,
                                                                            monkeypatch):
    """A store that needs a password: the terminal and the run directory never show it."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the store is not there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    uri = f"http://bob:{SECRET}@127.0.0.1:9/"
    pipeline = project(tmp_path, tiny_model, "secret-store", steps=1,
                       table=f'tracking_uri = "{uri}"')
    run_dir = tmp_path / "run"

    result = ftp_run(pipeline, run_dir)

    assert result.exit_code == 0, result.output  # tracking is a bystander: the run goes on
    assert "cannot start an MLflow run at http://bob:***@127.0.0.1:9/" in result.output
    assert SECRET not in result.output
    assert files_holding(run_dir, SECRET) == []
    resolved = json.loads((run_dir / "resolved.json").read_text())
    assert resolved["plugins"]["mlflow"]["tracking_uri"] == "http://bob:***@127.0.0.1:9/"
    assert 'tracking_uri = "http://bob:***@127.0.0.1:9/"' in (run_dir / "pipeline.toml").read_text()
    assert SECRET in pipeline.read_text()  # the user's own file is theirs, unchanged


def test_passwords_in_the_pipeline_never_reach_the_tracker(tmp_path, tiny_model, store,
                                                           monkeypatch):
    """Params, tags and uploaded files carry the masked value."""
    pipeline = project(tmp_path, tiny_model, "secret-params", steps=1)
    text = pipeline.read_text().replace(
        'description = "tracked by ftp-mlflow"',
        f'description = "rows from https://bob:{SECRET}@data.example.com/qa"')
    pipeline.write_text(text)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)

    result = ftp_run(pipeline, tmp_path / "run")

    assert result.exit_code == 0, result.output
    client = MlflowClient(store)
    run = the_run(client, "secret-params")
    masked = "rows from https://bob:***@data.example.com/qa"
    assert run.data.tags["mlflow.note.content"] == masked
    assert run.data.params["pipeline.description"] == masked
    assert not [k for k, v in {**run.data.params, **run.data.tags}.items() if SECRET in v]
    downloaded = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "got")))
    assert {"pipeline.toml", "resolved.json"} <= {p.name for p in downloaded.iterdir()}
    assert files_holding(downloaded, SECRET) == []
