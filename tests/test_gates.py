"""Quality gates: ``[[evaluate]] require``, checked at validation, judged after the run."""

import json
from pathlib import Path

import pytest

from ftp import Evaluator, StrictConfig, hookimpl
from ftp.gates import EXIT_CODE, Requirement, parse
from ftp.testing import plugin, run_cli
from tests.test_report import tiny_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def with_gates(folder: Path, model: Path, *requires: str, before: bool = True) -> Path:
    """The report tests' tiny pipeline with a third evaluation carrying ``requires``."""
    gate = (f'\n[[evaluate]]\nname = "gated"\nevaluator = "generate"\n'
            f'before = {str(before).lower()}\nprompts = ["hi"]\nmax_new_tokens = 4\n'
            f'require = {json.dumps(list(requires))}')
    return tiny_pipeline(folder, model, gate)


# --- the syntax ------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "parsed"), [
    ("accuracy >= base + 0.02", Requirement("accuracy >= base + 0.02", "accuracy", ">=", None,
                                            0.02)),
    ("loss<base-1e-2", Requirement("loss<base-1e-2", "loss", "<", None, -0.01)),
    ("stopped_fraction >= 0.95", Requirement("stopped_fraction >= 0.95", "stopped_fraction",
                                             ">=", 0.95)),
    ("greedy/reward > -1", Requirement("greedy/reward > -1", "greedy/reward", ">", -1.0)),
    ("pairs == base", Requirement("pairs == base", "pairs", "==", None, 0.0)),
])
def test_requirements_are_read(text, parsed):
    assert parse(text) == parsed


@pytest.mark.parametrize("text", ["accuracy", "accuracy >= ", ">= 0.5", "accuracy => 0.5",
                                  "accuracy >= base * 2", "accuracy >= 0.5 + base",
                                  "accuracy >= high"])
def test_unreadable_requirements_are_refused(text):
    with pytest.raises(ValueError, match="cannot read requirement"):
        parse(text)


def test_a_requirement_holds_on_its_threshold_and_never_on_nan():
    req = parse("accuracy >= base + 0.25")
    assert req.holds(0.75, base=0.5) and not req.holds(0.74, base=0.5)
    assert not req.holds(float("nan"), base=0.5) and not req.holds(1.0, base=None)


# --- validation --------------------------------------------------------------------------------


def test_a_misspelt_metric_is_a_validation_error_with_a_suggestion(tiny_model, tmp_path):
    pipeline = with_gates(tmp_path, tiny_model, "stoped_fraction >= 0.95")
    result = run_cli("validate", str(pipeline))
    assert result.exit_code == 2
    assert "evaluate[2].require[0]: evaluator 'generate' reports no metric 'stoped_fraction' " \
           "(did you mean 'stopped_fraction'?); it reports: stopped_fraction, " \
           "mean_new_tokens" in result.stderr


class _Declaring(Evaluator):
    """Declares its metrics through an override (see the two subclasses)."""

    class Config(StrictConfig):
        """No options."""

    def evaluate(self, ctx):
        return {"metrics": {"score": 1.0}}


class Broken(_Declaring):
    """A current override (it takes base_dir) with a bug inside: a TypeError of its own."""

    name = "broken"

    def reported_metrics(self, base_dir=None):
        return tuple(sorted(["score", None]))  # TypeError: None < str


class OldStyle(_Declaring):
    """An override written before base_dir was passed: it takes no argument."""

    name = "oldstyle"

    def reported_metrics(self):
        return ("score",)


class DeclaringPlugin:
    @hookimpl
    def ftp_evaluators(self):
        return [Broken, OldStyle]


def test_an_error_inside_a_metrics_override_is_the_plugins_not_retried(tiny_model, tmp_path):
    # An override that takes base_dir and raises TypeError is not called again without it
    # (which would fail differently, or hide the bug): validation names the plugin and its error.
    gate = '\n[[evaluate]]\nevaluator = "broken"\nrequire = ["score >= 0"]'
    with plugin(DeclaringPlugin(), "declaring"):
        result = run_cli("validate", str(tiny_pipeline(tmp_path, tiny_model, gate)))
    assert result.exit_code == 2, result.output
    assert "evaluate[2].require: evaluator 'broken' (plugin 'declaring') failed to list its " \
           "metrics: TypeError: '<' not supported" in result.stderr, result.stderr
    assert "Traceback" not in result.output


def test_a_metrics_override_from_before_base_dir_is_still_checked(tiny_model, tmp_path):
    gate = '\n[[evaluate]]\nevaluator = "oldstyle"\nrequire = ["scor >= 0"]'
    with plugin(DeclaringPlugin(), "declaring"):
        result = run_cli("validate", str(tiny_pipeline(tmp_path, tiny_model, gate)))
    assert result.exit_code == 2, result.output
    assert "evaluator 'oldstyle' reports no metric 'scor' (did you mean 'score'?)" \
        in result.stderr, result.stderr


def test_base_relative_requirements_need_before_and_bad_ones_are_named(tiny_model, tmp_path):
    pipeline = with_gates(tmp_path, tiny_model, "stopped_fraction >= base", "mean_new_tokens ~ 3",
                          before=False)
    result = run_cli("validate", str(pipeline))
    assert result.exit_code == 2
    assert "evaluate[2].require[0]: 'stopped_fraction >= base' compares with base, the model " \
           "before training: set before = true in this [[evaluate]]" in result.stderr
    assert "evaluate[2].require[1]: cannot read requirement 'mean_new_tokens ~ 3'" \
           in result.stderr


def test_expected_fraction_exists_only_when_expect_is_given(tiny_model, tmp_path):
    pipeline = with_gates(tmp_path, tiny_model, "expected_fraction >= 0.5")
    result = run_cli("validate", str(pipeline))
    assert result.exit_code == 2 and "reports no metric 'expected_fraction'" in result.stderr
    fixed = with_gates(tmp_path, tiny_model, "expected_fraction >= 0.5")
    fixed.write_text(fixed.read_text().replace('prompts = ["hi"]',
                                               'prompts = ["hi"]\nexpect = ["Nova"]'))
    ok = run_cli("validate", str(fixed))
    assert ok.exit_code == 0, ok.output


# --- after a run ------------------------------------------------------------------------------


def test_a_failed_requirement_exits_3_after_saving_everything(tiny_model, tmp_path):
    pipeline = with_gates(tmp_path, tiny_model, "mean_new_tokens <= base + 10",
                          "mean_new_tokens > 100")
    out = tmp_path / "run"
    result = run_cli("run", str(pipeline), "-o", str(out))
    assert result.exit_code == EXIT_CODE == 3, result.output
    # The failed requirement is the whole of stderr: no library's progress bar around it.
    assert result.stderr.splitlines() == [
        "error: 1 requirement(s) failed:",
        "  gated: mean_new_tokens > 100 (mean_new_tokens = 4, threshold 100)"]

    # The run finished and is whole: model, results (each requirement judged), report.
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    assert (out / "model" / "config.json").is_file()
    judged = json.loads((out / "results.json").read_text())["requirements"]
    assert [(r["requirement"], r["passed"]) for r in judged] == [
        ("mean_new_tokens <= base + 10", True), ("mean_new_tokens > 100", False)]
    assert judged[0] | {"value": None} == {
        "evaluation": "gated", "requirement": "mean_new_tokens <= base + 10",
        "metric": "mean_new_tokens", "stage": "sft", "value": None, "base": 4.0,
        "threshold": 14.0, "passed": True}
    page = (out / "report.html").read_text()
    assert "Requirements: 1 of 2 hold" in page and "FAILED" in page
    assert "1 of 2 requirements failed (ftp run exited with code 3)" in page
    assert "## Requirements: 1 of 2 hold" in (out / "summary.md").read_text()


def test_requirements_that_hold_exit_0(tiny_model, tmp_path):
    pipeline = with_gates(tmp_path, tiny_model, "mean_new_tokens <= 4",
                          "stopped_fraction >= base - 1")
    result = run_cli("run", str(pipeline), "-o", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert "requirements: 2 of 2 hold" in result.stdout
