"""Runs that survive: checkpoints inside a stage, resume after SIGKILL/SIGTERM/SIGINT, a live
run's lock, the non-finite guard, and a stage's model saved before its evaluations.

Every run goes through the real ``ftp`` CLI in a subprocess on a tiny model. Interruptions are
real signals, sent by a local plugin's trainer callback to its own process at a chosen step.
On CPU with one thread, a resumed run is compared with an uninterrupted one exactly: equal
per-step losses after the resume point and bit-identical final weights.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftp.checkpoints import complete, damage
from ftp.testing import run_ftp, write_pipeline

DATA = Path(__file__).parent / "data"
pytestmark = pytest.mark.usefixtures("one_thread")

# Sends a real signal to its own process at step CTL_STEP of stage CTL_STAGE; with CTL_HOLD,
# waits at the start of training until the file CTL_HOLD/go exists. Also an evaluator that
# fails unless FLAKY_OK is set.
CONTROL = '''
import os, signal, time
from pathlib import Path
from ftp import Evaluator, hookimpl

@hookimpl
def ftp_trainer_callbacks(stage):
    from transformers import TrainerCallback

    class Control(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            hold = os.environ.get("CTL_HOLD")
            if hold:
                Path(hold, "ready").write_text(str(os.getpid()))
                deadline = time.time() + 300
                while not Path(hold, "go").exists() and time.time() < deadline:
                    time.sleep(0.1)

        def on_step_end(self, args, state, control, **kw):
            if os.environ.get("CTL_STAGE", stage) == stage and \\
                    state.global_step == int(os.environ.get("CTL_STEP", "-1")):
                for _ in range(int(os.environ.get("CTL_TIMES", "1"))):
                    os.kill(os.getpid(), getattr(signal, os.environ["CTL_SIGNAL"]))

    return [Control()]


@hookimpl
def ftp_pipeline_error(error, step, run_dir):
    Path(run_dir, "error-hook.txt").write_text(f"{type(error).__name__}: {error}")


class Flaky(Evaluator):
    """Fails unless FLAKY_OK is set."""

    name = "flaky"

    def evaluate(self, ctx):
        if not os.environ.get("FLAKY_OK"):
            raise RuntimeError("the flaky evaluator failed")
        return {"metrics": {"ok": 1.0}}


@hookimpl
def ftp_evaluators():
    return [Flaky]
'''

STEPS = 10


def ftp(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``ftp -p control.py ARGS`` in a subprocess, on one thread."""
    return run_ftp("-p", "control.py", *args, cwd=cwd, **{"OMP_NUM_THREADS": "1", **env})


def stage_text(name: str, extra: str = "") -> str:
    return f"""
        [[stages]]
        name = "{name}"
        method = "sft"
        data = "d"
        adapter = {{ r = 4 }}
        bf16 = false
        max_steps = {STEPS}
        batch_size = 2
        learning_rate = 5e-3
        logging_steps = 1
        checkpoint_every = 3
        keep_checkpoints = 2
        {extra}
    """


def make_project(root: Path, tiny_model: Path, stages: list[str], tail: str = "") -> Path:
    rows = json.loads((DATA / "alpaca.json").read_text(encoding="utf-8"))
    (root / "d.json").write_text(json.dumps(rows), encoding="utf-8")
    (root / "control.py").write_text(CONTROL, encoding="utf-8")
    write_pipeline(root / "p.toml", f"""
        [pipeline]
        name = "survive"
        [model]
        path = "{tiny_model}"
        [data.d]
        loader = "json"
        path = "d.json"
        format = "alpaca"
        placeholders = {{ name = "Nova", author = "Northwind Labs" }}
    """ + "".join(stages) + tail)
    return root


def losses(run: Path) -> dict[tuple[str, int], float]:
    """(stage, step) → loss; fails when a step is recorded twice."""
    found: dict[tuple[str, int], float] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "loss" in r and "event" not in r:
            key = (r["stage"], r["step"])
            assert key not in found, f"step {key} recorded twice in metrics.jsonl"
            found[key] = r["loss"]
    return found


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    import torch

    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), f"{name} differs"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model) -> dict[str, Path]:
    """Uninterrupted runs of the one- and two-stage pipelines (same seed)."""
    out = {}
    for key, stages in (("one", ["sft"]), ("two", ["a", "b"])):
        root = make_project(tmp_path_factory.mktemp(f"ref-{key}"), tiny_model,
                            [stage_text(s) for s in stages])
        done = ftp("run", "p.toml", cwd=root)
        assert done.returncode == 0, done.stderr
        out[key] = root / "runs" / "survive"
    return out


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, tiny_model, reference):
    kill_at = random.Random().randint(7, STEPS - 1)  # two checkpoints (3, 6) exist by then
    root = make_project(tmp_path, tiny_model, [stage_text("sft")])
    killed = ftp("run", "p.toml", cwd=root, CTL_STEP=str(kill_at), CTL_SIGNAL="SIGKILL")
    assert killed.returncode == -signal.SIGKILL, f"kill at {kill_at}: {killed.stderr}"
    run = root / "runs" / "survive"
    assert json.loads((run / "run.json").read_text())["status"] == "running"

    again = ftp("run", "p.toml", cwd=root)
    assert again.returncode == 2
    assert "earlier run (killed)" in again.stderr and "--resume" in again.stderr

    # The newest checkpoint is damaged: reported, and the one before it used.
    saved = complete(run / "stages" / "sft" / "checkpoints")
    assert [p.name for p in saved] == ["step-3", "step-6"]
    (saved[-1] / "adapter_model.safetensors").write_bytes(b"torn")
    resumed = ftp("run", "p.toml", "--resume", cwd=root)
    assert resumed.returncode == 0, f"kill at {kill_at}: {resumed.stderr}"
    assert "step-6 is damaged" in resumed.stdout
    assert "resuming stage 'sft' at step 3" in resumed.stdout

    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "finished" and "error" not in status
    ref = reference["one"]
    assert losses(run) == losses(ref), f"kill at {kill_at}"
    assert sorted(losses(run)) == [("sft", s) for s in range(1, STEPS + 1)]
    assert_same_weights(run / "model", ref / "model")


def test_sigkill_in_the_first_of_two_stages_resumes_exactly(tmp_path, tiny_model, reference):
    kill_at = random.Random().randint(4, STEPS - 1)
    root = make_project(tmp_path, tiny_model, [stage_text("a"), stage_text("b")])
    killed = ftp("run", "p.toml", cwd=root, CTL_STAGE="a", CTL_STEP=str(kill_at),
                 CTL_SIGNAL="SIGKILL")
    assert killed.returncode == -signal.SIGKILL
    run = root / "runs" / "survive"

    # What a resume must match: a changed option and changed data are refused by name.
    changed = ftp("run", "p.toml", "--resume", "--set", "stages[0].learning_rate=1e-3",
                  cwd=root)
    assert changed.returncode == 2
    assert "stage 'a' options changed" in changed.stderr
    data = root / "d.json"
    original = data.read_text()
    data.write_text(json.dumps(json.loads(original)[:-1]))
    other_data = ftp("run", "p.toml", "--resume", cwd=root)
    assert other_data.returncode == 2
    assert "data 'd' records changed" in other_data.stderr
    data.write_text(original)

    resumed = ftp("resume", str(run), cwd=root)
    assert resumed.returncode == 0, f"kill at {kill_at}: {resumed.stderr}"
    ref = reference["two"]
    assert losses(run) == losses(ref), f"kill at {kill_at}"
    assert_same_weights(run / "stages" / "a" / "model", ref / "stages" / "a" / "model")
    assert_same_weights(run / "model", ref / "model")


@pytest.mark.parametrize(("sig", "code"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_checkpoints_marks_interrupted_and_resumes(tmp_path, tiny_model, reference,
                                                            sig, code):
    root = make_project(tmp_path, tiny_model, [stage_text("sft")])
    stopped = ftp("run", "p.toml", cwd=root, CTL_STEP="4", CTL_SIGNAL=sig)
    assert stopped.returncode == code, stopped.stderr
    assert "Traceback" not in stopped.stderr
    run = root / "runs" / "survive"
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "interrupted"
    assert status["signal"] == sig
    # The checkpoint is written at the step boundary after the signal.
    assert status["checkpoint_step"] == 5
    assert damage(Path(status["checkpoint"])) is None
    assert status["resume"] == f"ftp resume {run}"
    assert f"ftp resume {run}" in stopped.stderr
    assert (run / "error-hook.txt").read_text() == f"Interrupted: interrupted by {sig}"

    resumed = ftp("resume", str(run), cwd=root)
    assert resumed.returncode == 0, resumed.stderr
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "finished"
    assert "signal" not in status and "checkpoint" not in status
    assert losses(run) == losses(reference["one"])
    assert_same_weights(run / "model", reference["one"] / "model")


def test_a_second_ctrl_c_stops_at_once(tmp_path, tiny_model):
    root = make_project(tmp_path, tiny_model, [stage_text("sft")])
    stopped = ftp("run", "p.toml", cwd=root, CTL_STEP="4", CTL_SIGNAL="SIGINT", CTL_TIMES="2")
    assert stopped.returncode == 130, stopped.stderr
    status = json.loads((root / "runs" / "survive" / "run.json").read_text())
    assert status["status"] == "interrupted"
    # No step boundary was waited for: the newest checkpoint is the scheduled one at step 3.
    assert status["checkpoint_step"] == 3


def test_a_diverging_stage_stops_at_the_nonfinite_step(tmp_path, tiny_model):
    root = make_project(tmp_path, tiny_model, [stage_text("sft").replace(
        "learning_rate = 5e-3", "learning_rate = 1e30").replace(
        "checkpoint_every = 3", "checkpoint_every = 1").replace(
        "adapter = { r = 4 }", "")])
    result = ftp("run", "p.toml", cwd=root)
    assert result.returncode == 1
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "stage 'sft', step " in lines[0]
    assert " is nan" in lines[0] or " is inf" in lines[0]
    assert "last good checkpoint:" in lines[0]
    run = root / "runs" / "survive"
    assert not (run / "model").exists(), "no final model after a non-finite step"
    good = Path(lines[0].split("last good checkpoint: ")[1].split(")")[0])
    assert good.is_dir() and damage(good) is None
    records = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    bad = [r for r in records if r.get("event") == "non-finite"]
    assert len(bad) == 1 and set(bad[0].values()) & {"nan", "inf"}


def test_skipping_a_bounded_number_of_nonfinite_steps(tmp_path, tiny_model):
    root = make_project(tmp_path, tiny_model, [stage_text("sft", "skip_nonfinite_steps = 2")
                                               .replace("learning_rate = 5e-3",
                                                        "learning_rate = 1e30")
                                               .replace("adapter = { r = 4 }", "")])
    result = ftp("run", "p.toml", cwd=root)
    assert result.returncode == 1
    assert result.stdout.count("step skipped") == 2
    assert "error: stage 'sft', step" in result.stderr


def test_evaluator_failing_after_training_resumes_at_the_evaluation(tmp_path, tiny_model):
    root = make_project(tmp_path, tiny_model, [stage_text("sft")],
                        '\n[[evaluate]]\nevaluator = "flaky"\n')
    failed = ftp("run", "p.toml", cwd=root)
    assert failed.returncode == 1 and "the flaky evaluator failed" in failed.stderr
    run = root / "runs" / "survive"
    assert (run / "model" / "config.json").is_file(), "the stage's model is saved first"
    trained = weights(run / "model")
    steps = losses(run)

    resumed = ftp("run", "p.toml", "--resume", cwd=root, FLAKY_OK="1")
    assert resumed.returncode == 0, resumed.stderr
    assert "train (sft)" not in resumed.stdout and "save model" not in resumed.stdout
    assert "evaluate 'flaky'" in resumed.stdout
    assert losses(run) == steps
    assert weights(run / "model").keys() == trained.keys()
    results = json.loads((run / "results.json").read_text())
    assert results["stages"]["sft"]["flaky"]["metrics"] == {"ok": 1.0}


def test_a_live_run_cannot_be_joined_or_overwritten(tmp_path, tiny_model):
    root = make_project(tmp_path, tiny_model, [stage_text("sft")])
    hold = tmp_path / "hold"
    hold.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CTL_HOLD": str(hold)}
    first = subprocess.Popen([sys.executable, "-m", "ftp", "-p", "control.py", "run", "p.toml"],
                             cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.time() + 300
        while not (hold / "ready").exists():
            assert first.poll() is None and time.time() < deadline, first.communicate()
            time.sleep(0.2)
        run = root / "runs" / "survive"
        status = json.loads((run / "run.json").read_text())
        assert status["pid"] == first.pid and status["host"] and status["heartbeat"]
        for extra in ((), ("--overwrite",), ("--resume",)):
            second = ftp("run", "p.toml", *extra, cwd=root)
            assert second.returncode == 2, (extra, second.stderr)
            assert f"pid {first.pid} on host {status['host']}" in second.stderr, second.stderr
            assert "live run" in second.stderr
        assert (run / "run.json").is_file(), "nothing of the live run was deleted"
    finally:
        (hold / "go").write_text("")
        out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err


def test_checkpoint_every_is_validated(tmp_path, tiny_model):
    root = make_project(tmp_path, tiny_model, [stage_text("sft").replace(
        "checkpoint_every = 3", 'checkpoint_every = "soon"')])
    result = ftp("validate", "p.toml", cwd=root)
    assert result.returncode == 2
    assert "stages[0].checkpoint_every" in result.stderr and "30m" in result.stderr


def test_resume_with_a_secret_in_set_asks_for_it_again(tmp_path, tiny_model):
    root = make_project(tmp_path, tiny_model, [stage_text("sft")],
                       '\n[[evaluate]]\nevaluator = "flaky"\n')
    secret = "--set=pipeline.description=https://me:hunter2@example.org/x"
    failed = ftp("run", "p.toml", secret, cwd=root)
    assert failed.returncode == 1
    run = root / "runs" / "survive"
    assert "hunter2" not in (run / "run.json").read_text()
    resolved = json.loads((run / "resolved.json").read_text())
    assert resolved["stages"][0]["checkpoints"] == {"steps": 3, "seconds": None, "keep": 2,
                                                    "skip_nonfinite": 0}

    refused = ftp("resume", str(run), cwd=root, FLAKY_OK="1")
    assert refused.returncode == 2
    assert "holding a secret" in refused.stderr and "--resume" in refused.stderr
    resumed = ftp("run", "p.toml", secret, "--resume", cwd=root, FLAKY_OK="1")
    assert resumed.returncode == 0, resumed.stderr
