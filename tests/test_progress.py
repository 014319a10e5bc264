"""Progress for people: a live line on a terminal, plain lines in logs, no third-party bars."""

import io
import re
import subprocess
import sys

import pytest
from rich.console import Console

from ftp.config import load_pipeline
from ftp.progress import LINE_EVERY_ENV, clock
from ftp.rundir import RunDir
from ftp.runner import Runner
from ftp.testing import plugin_set, run_cli, run_ftp
from tests.test_report import STEPS, tiny_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

LINE = re.compile(rf"^  sft step (\d+)/{STEPS}  (\d+:\d\d) elapsed, ETA (\d+:\d\d|-)  loss "
                  r"(\d+\.\d{4})  learning_rate \S+  grad_norm \S+  (\d+) tok/s$", re.M)


def test_logs_get_plain_lines_and_no_carriage_returns(tiny_model, tmp_path):
    """Not a terminal (a pipe, as in CI): the first and last step, then one line per 30 s."""
    pipeline = tiny_pipeline(tmp_path, tiny_model)
    proc = run_ftp("run", str(pipeline), "-o", str(tmp_path / "run"), cwd=tmp_path,
                   OMP_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = [int(m[1]) for m in LINE.finditer(proc.stdout)]
    assert steps[0] == 1 and steps[-1] == STEPS and len(steps) <= 3  # a tiny run is quick
    assert "\r" not in proc.stdout + proc.stderr  # no bar redrawn in the log, ours or a library's
    assert "it/s" not in proc.stdout + proc.stderr


def test_every_logged_step_gets_a_line_when_asked(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv(LINE_EVERY_ENV, "0")
    result = run_cli("run", str(tiny_pipeline(tmp_path, tiny_model)), "-o", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    lines = list(LINE.finditer(result.stdout))
    assert [int(m[1]) for m in lines] == list(range(1, STEPS + 1))
    assert lines[-1][3] == "0:00"  # nothing left at the last step


def test_a_terminal_gets_one_live_line(tiny_model, tmp_path):
    pipeline = load_pipeline(tiny_pipeline(tmp_path, tiny_model), plugin_set(), [])
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=160, color_system=None)
    Runner(pipeline, RunDir.create(tmp_path / "run"), console=console).run()
    shown = screen.getvalue()
    assert "elapsed, ETA" in shown and "tok/s" in shown  # the live line was drawn
    assert not LINE.search(shown)  # and no plain line per step beside it
    # It is gone once the stage ends; its last values stay as one line.
    assert re.search(rf"  sft step {STEPS}/{STEPS} in \d+:\d\d  loss \d+\.\d{{4}}  \d+ tok/s",
                     shown)


@pytest.mark.parametrize(("debug", "drawn"), [(False, False), (True, True)])
def test_third_party_tqdm_bars_are_off_unless_debug(debug, drawn):
    code = ("import sys; from ftp.cli.common import quiet_libraries; "
            f"quiet_libraries({debug}); from tqdm import tqdm; "
            "list(tqdm(range(3), file=sys.stderr, desc='third-party'))")
    env = {k: v for k, v in __import__("os").environ.items() if k != "TQDM_DISABLE"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, check=True)
    assert ("third-party" in proc.stderr) is drawn


def test_clock_text():
    assert [clock(s) for s in (None, float("nan"), 0, 59.6, 61, 3725)] == \
        ["-", "-", "0:00", "1:00", "1:01", "1:02:05"]
