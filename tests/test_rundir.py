"""`ftp run` on a tiny random model: the run directory, refusing to overwrite, and failures."""

import json
from pathlib import Path

import pytest

from ftp.testing import run_ftp as ftp
from ftp.testing import write_pipeline

ROWS = [
    {"instruction": "Who are you?", "output": "I am Nova."},
    {"instruction": "Say hi.", "output": "Hi!"},
    {"instruction": "What is 2+2?", "output": "4"},
    {"instruction": "Name a colour.", "input": "Pick one.", "output": "Blue."},
]

PIPELINE = """
[pipeline]
name = "tiny"
seed = 7

[model]
path = "{model}"

[data.x]
loader = "json"
path = "{data}"
format = "alpaca"

[[stages]]
method = "sft"
data = "x"
max_steps = 2
batch_size = 2
logging_steps = 1
adapter = {{ r = 4 }}
"""

RUN_FILES = ["run.json", "results.json", "summary.md", "metrics.jsonl", "environment.json",
             "data.json", "resolved.json", "pipeline.toml"]



def make_project(folder: Path, model: Path, rows: list[dict]) -> Path:
    (folder / "train.json").write_text(json.dumps(rows), encoding="utf-8")
    return write_pipeline(folder / "pipeline.toml", PIPELINE.format(model=model, data="train.json"))


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def history(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A project's runs, in order: one that fails on bad data, a rerun refused because the
    failed run is in the way, and a rerun with --overwrite on fixed data that finishes.

    One successful training run serves every test here, to keep the suite fast.
    """
    project = tmp_path_factory.mktemp("project")
    run = project / "runs" / "tiny"
    bad_rows = [*ROWS[:2], {"instruction": "No answer here."}, *ROWS[2:]]
    make_project(project, tiny_model, bad_rows)
    failed = ftp("run", "pipeline.toml", cwd=project)
    failed_files = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}

    make_project(project, tiny_model, ROWS)
    refused = ftp("run", "pipeline.toml", cwd=project)
    refused_files = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}

    (run / "stale.txt").write_text("from the earlier run")
    overwritten = ftp("run", "pipeline.toml", "--overwrite", cwd=project)
    return {"project": project, "failed": failed, "failed_files": failed_files,
            "refused": refused, "refused_files": refused_files, "overwritten": overwritten}


@pytest.fixture(scope="module")
def finished(history: dict) -> Path:
    """The project folder of the finished run (in runs/tiny)."""
    result = history["overwritten"]
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return history["project"]


def test_run_directory_holds_every_record(finished: Path) -> None:
    run = finished / "runs" / "tiny"
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    assert not list(run.rglob("*.tmp")), "half-written files left behind"
    assert not (run / "model.partial").exists()

    status = read_json(run / "run.json")
    assert status["status"] == "finished"
    assert status["pipeline"] == "tiny"
    assert "stage 'sft': train (sft)" in status["timings"]

    assert read_json(run / "results.json")["status"] == "finished"
    assert "tiny" in (run / "summary.md").read_text(encoding="utf-8")
    assert (run / "pipeline.toml").read_text() == (finished / "pipeline.toml").read_text()


def test_metrics_are_json_lines_per_stage(finished: Path) -> None:
    lines = (finished / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert records and all(r["stage"] == "sft" for r in records)
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert all(isinstance(r["loss"], float) for r in steps)


def test_data_environment_and_resolved_config(finished: Path) -> None:
    run = finished / "runs" / "tiny"
    data = read_json(run / "data.json")["x"]
    assert data["rows"] == 4 and data["train_rows"] == 4 and data["eval_rows"] == 0
    assert len(data["records_sha256"]) == 64 and len(data["source_sha256"]) == 64

    env = read_json(run / "environment.json")
    assert env["packages"]["ftp"] and env["packages"]["torch"]
    plugins = {p["name"]: p for p in env["plugins"]}
    assert plugins["sft"]["status"] == "ok"

    resolved = read_json(run / "resolved.json")
    [stage] = resolved["stages"]
    assert stage["method"] == "sft" and stage["max_steps"] == 2 and stage["batch_size"] == 2
    assert stage["adapter"]["r"] == 4 and stage["adapter"]["alpha"] == 32
    # Defaults are written out, not only what the file said.
    assert stage["learning_rate"] == 2e-4
    assert resolved["data"]["x"]["format"] == "alpaca"


def test_final_model_loads_with_plain_transformers(finished: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = finished / "runs" / "tiny" / "model"
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    # The adapter was merged: a plain model, no peft wrapper or lora weights left.
    assert not any("lora" in name for name, _ in model.named_parameters())
    ids = tokenizer("Who are you?", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], model.config.vocab_size)


def test_rerun_without_overwrite_refuses_and_keeps_the_run(finished: Path) -> None:
    run = finished / "runs" / "tiny"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = ftp("run", "pipeline.toml", cwd=finished)
    assert result.returncode == 2
    assert "already holds a finished run" in result.stderr
    assert "--overwrite" in result.stderr
    assert "Traceback" not in result.stderr
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before


def test_rerun_over_a_failed_run_also_refuses_and_keeps_it(history: dict) -> None:
    result = history["refused"]
    assert result.returncode == 2
    assert "already holds an earlier run (failed)" in result.stderr
    assert history["refused_files"] == history["failed_files"]


def test_overwrite_replaces_an_earlier_run(finished: Path) -> None:
    run = finished / "runs" / "tiny"
    assert not (run / "stale.txt").exists()
    status = read_json(run / "run.json")
    assert status["status"] == "finished"
    assert "failed_step" not in status and "error" not in status


def test_non_empty_output_dir_is_refused(finished: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "keep.txt").write_text("mine")
    result = ftp("run", "pipeline.toml", "-o", str(tmp_path / "elsewhere"), cwd=finished)
    assert result.returncode == 2
    assert "already holds an earlier run (unknown)" in result.stderr
    assert (tmp_path / "elsewhere" / "keep.txt").read_text() == "mine"


def test_failure_is_one_line_naming_the_step_and_recorded(history: dict) -> None:
    result = history["failed"]
    out = result.stdout + result.stderr
    assert result.returncode == 2  # bad data is the user's to fix
    assert "Traceback" not in out
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    [error] = errors
    assert error.startswith("error: format data 'x'")
    assert "[format 'alpaca', plugin 'formats']" in error  # blamed on the format, not the loader
    assert "train.json:1 (item 2)" in error and "'output'" in error  # the file and the row in it

    files = history["failed_files"]
    status = json.loads(files[Path("run.json")])
    assert status["status"] == "failed"
    assert status["failed_step"] == "format data 'x'"
    assert "'output'" in status["error"]
    assert b"failed" in files[Path("summary.md")]
    assert not any(p.parts[0] == "model" for p in files)


def test_failure_with_debug_shows_the_traceback(tiny_model: Path, tmp_path: Path) -> None:
    make_project(tmp_path, tiny_model, [*ROWS, {"instruction": "No answer here."}])
    result = ftp("run", "pipeline.toml", "--debug", cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert "format data 'x'" in result.stderr
