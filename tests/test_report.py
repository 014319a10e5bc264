"""report.html in every run folder, ``ftp report`` rebuilding it, and ``ftp compare``."""

import html
import json
import re
from pathlib import Path

import pytest

from ftp import Evaluator, StrictConfig, hookimpl
from ftp.testing import plugin, run_cli, write_pipeline

DATA = Path(__file__).parent / "data"
STEPS = 6
#: Prompts a page must show as text: the second would run as script if not escaped.
PROMPTS = ["Who are you?", "Is 1 < 2 & <script>alert('x')</script> safe?"]

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def tiny_pipeline(folder: Path, model: Path, extra_eval: str = "") -> Path:
    """A few SFT steps on the tiny model, a loss evaluation and answers before and after."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_pipeline(folder / "pipeline.toml", f"""
        [pipeline]
        name = "report-test"
        seed = 3

        [model]
        path = {json.dumps(str(model))}

        [data.identity]
        loader = "json"
        path = {json.dumps(str(DATA / "alpaca.json"))}
        format = "alpaca"
        placeholders = {{ name = "Nova", author = "Northwind Labs" }}

        [[stages]]
        method = "sft"
        data = "identity"
        max_steps = {STEPS}
        learning_rate = 1e-2
        batch_size = 4
        logging_steps = 1

        [[evaluate]]
        evaluator = "loss"
        data = "identity"
        split = "all"
        before = true

        [[evaluate]]
        evaluator = "generate"
        before = true
        prompts = {json.dumps(PROMPTS)}
        max_new_tokens = 6
        {extra_eval}
    """)


def run(pipeline: Path, out: Path, *args: str) -> Path:
    result = run_cli("run", str(pipeline), "--output-dir", str(out), *args)
    assert result.exit_code == 0, result.output
    return out


#: A third-party evaluator's answer, markup and all: the page must show it as text.
MARKUP_ANSWER = "<img src=x onerror=alert(1)> </td></table> & <b>bold</b>"


class Echo(Evaluator):
    """Answers every prompt with markup, as a careless model or plugin might."""

    name = "echo"
    metric_names = ("answers",)

    class Config(StrictConfig):
        """No options."""

    def evaluate(self, ctx):
        return {"metrics": {"answers": 1},
                "samples": [{"prompt": "<i>say</i> markup", "answer": MARKUP_ANSWER}]}


class EchoPlugin:
    @hookimpl
    def ftp_evaluators(self):
        return [Echo]


ECHO = '\n[[evaluate]]\nevaluator = "echo"\nbefore = true'


@pytest.fixture(scope="module")
def tiny_run(one_thread, tiny_model, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("report")
    with plugin(EchoPlugin(), "echo_judge"):
        return run(tiny_pipeline(work, tiny_model, ECHO), work / "run-a")


@pytest.fixture(scope="module")
def slower_run(one_thread, tiny_model, tmp_path_factory) -> Path:
    """The same pipeline at a tenth of the learning rate."""
    work = tmp_path_factory.mktemp("report-b")
    with plugin(EchoPlugin(), "echo_judge"):
        return run(tiny_pipeline(work, tiny_model, ECHO), work / "run-b",
                   "--set", "stages[0].learning_rate=1e-3")


def polylines(page: str) -> list[str]:
    return re.findall(r"<polyline points=\"([^\"]+)\"", page)


def test_a_run_leaves_a_report_with_curves_evaluations_and_escaped_answers(tiny_run):
    page = (tiny_run / "report.html").read_text(encoding="utf-8")
    # Loss, learning rate, grad norm and tokens/s: each a curve with a point per logged step.
    for title in ("sft: loss", "sft: learning rate", "sft: grad norm", "sft: tokens/s"):
        assert f">{title}</text>" in page
    curves = polylines(page)
    assert len(curves) >= 4 and all(len(c.split()) == STEPS for c in curves)

    results = json.loads((tiny_run / "results.json").read_text())
    before = results["stages"]["base"]["loss"]["metrics"]["loss"]
    after = results["stages"]["sft"]["loss"]["metrics"]["loss"]
    evaluations = page.split("<h2>Evaluations</h2>")[1].split("<h2>")[0]
    assert "before training" in evaluations and "after sft" in evaluations
    row = re.search(r"<td>loss</td><td class=\"num\">([^<]+)</td><td class=\"num\">([^<]+)"
                    r"</td><td class=\"num (changed)\">([^<]+)</td>", evaluations)
    assert row is not None
    assert float(row[1]) == pytest.approx(before, rel=1e-3)
    assert float(row[2]) == pytest.approx(after, rel=1e-3)
    assert float(row[4]) == pytest.approx(after - before, rel=1e-2, abs=1e-3)

    # Answers side by side, every prompt and answer as text, never as markup.
    answers = page.split("<h2>Answers</h2>")[1].split("<h2>")[0]
    assert "<script" not in page
    assert html.escape(PROMPTS[1]) in answers
    for stage in ("base", "sft"):
        for sample in results["stages"][stage]["generate"]["samples"]:
            assert html.escape(sample["answer"]) in answers
    echoed = answers.split("<h3>echo</h3>")[1]
    assert echoed.count(html.escape(MARKUP_ANSWER)) == 2  # before and after, as text
    assert "<img" not in page and "<b>bold" not in page and "<i>say" not in page
    for part in ("<h2>Data</h2>", "<h2>Timings</h2>", "<h2>Versions</h2>", "<h2>Pipeline</h2>",
                 "finished"):
        assert part in page


def test_ftp_report_rebuilds_the_report_from_the_folder(tiny_run):
    written = (tiny_run / "report.html").read_text(encoding="utf-8")
    (tiny_run / "report.html").unlink()
    result = run_cli("report", str(tiny_run))
    assert result.exit_code == 0, result.output
    assert (tiny_run / "report.html").read_text(encoding="utf-8") == written


def test_ftp_report_works_on_a_folder_older_than_reports(tiny_run, tmp_path):
    """Only run.json and metrics.jsonl, as an early or killed run leaves: still a page."""
    old = tmp_path / "old"
    old.mkdir()
    for name in ("run.json", "metrics.jsonl"):
        (old / name).write_text((tiny_run / name).read_text())
    result = run_cli("report", str(old))
    assert result.exit_code == 0, result.output
    page = (old / "report.html").read_text()
    assert len(polylines(page)) >= 4 and "<h2>Evaluations</h2>" not in page

    # A run whose process died while running (no lock held) is shown as killed.
    status = json.loads((old / "run.json").read_text())
    (old / "run.json").write_text(json.dumps({**status, "status": "running"}))
    assert run_cli("report", str(old)).exit_code == 0
    assert 'class="status-killed">killed<' in (old / "report.html").read_text()


def test_ftp_report_refuses_a_folder_without_a_run(tmp_path):
    result = run_cli("report", str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path} holds no ftp run (no run.json or results.json)"]
    assert not (tmp_path / "report.html").exists()


class Broken(Evaluator):
    """Fails after training: the run is marked failed and still gets its report."""

    name = "broken"

    class Config(StrictConfig):
        """No options."""

    def evaluate(self, ctx):
        raise RuntimeError("the judge <fell> over")


class BrokenPlugin:
    @hookimpl
    def ftp_evaluators(self):
        return [Broken]


def test_a_failed_run_gets_a_report_saying_where_it_failed(tiny_model, tmp_path):
    pipeline = tiny_pipeline(tmp_path, tiny_model, '\n[[evaluate]]\nevaluator = "broken"')
    with plugin(BrokenPlugin(), "broken_judge"):
        result = run_cli("run", str(pipeline), "-o", str(tmp_path / "run"))
    assert result.exit_code == 1, result.output
    page = (tmp_path / "run" / "report.html").read_text()
    assert 'class="status-failed"' in page
    assert "the judge &lt;fell&gt; over" in page and "evaluate &#x27;broken&#x27;" in page
    assert len(polylines(page)) >= 4  # the training it did is shown


def test_ftp_compare_names_the_setting_that_differs_and_overlays_curves(tiny_run, slower_run,
                                                                        tmp_path):
    out = tmp_path / "pages" / "compare.html"
    result = run_cli("compare", str(tiny_run), str(slower_run), "-o", str(out))
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    settings = page.split("<h2>Settings that differ</h2>")[1].split("<h2>")[0]
    rows = re.findall(r"<tr><td><code>([^<]+)</code></td><td>([^<]+)</td><td>([^<]+)</td></tr>",
                      settings)
    assert rows == [("stages[0].learning_rate", "0.01", "0.001")]
    # Both runs' loss curves in one chart, and their metrics side by side.
    loss_chart = page.split(">sft: loss</text>")[1].split("</svg>")[0]
    assert loss_chart.count("<polyline") == 2
    assert ">run-a</th><th>run-b</th>" in page
    assert "<td>generate</td><td>stopped_fraction</td>" in page
    # What each run's training came to, side by side: the same steps, different losses.
    training = page.split("<h2>Training</h2>")[1].split("<h2>")[0]
    assert f'<td>sft</td><td>steps</td><td class="num">{STEPS}</td><td class="num">{STEPS}</td>' \
        in training
    losses = re.search(r'<td>sft</td><td>last loss</td><td class="num">([^<]+)</td>'
                       r'<td class="num">([^<]+)</td>', training)
    assert losses is not None and losses[1] != losses[2]


def test_ftp_compare_does_not_replace_a_file_it_did_not_write(tiny_run, slower_run, tmp_path):
    mine = tmp_path / "notes.html"
    mine.write_text("my own notes")
    result = run_cli("compare", str(tiny_run), str(slower_run), "-o", str(mine))
    assert result.exit_code == 2
    assert "was not written by ftp" in result.stderr
    assert mine.read_text() == "my own notes"
    one = run_cli("compare", str(tiny_run))
    assert one.exit_code == 2 and "at least two run folders" in one.stderr


def test_report_and_compare_import_no_heavy_library(tiny_run, slower_run, tmp_path):
    from tests.test_lazy_imports import HEAVY, imported_modules

    for args in (["report", str(tiny_run)],
                 ["compare", str(tiny_run), str(slower_run), "-o", str(tmp_path / "c.html")]):
        result, modules = imported_modules(args, tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        assert not {m.split(".")[0] for m in modules} & HEAVY


def test_a_dpo_run_reports_its_reward_curves(tiny_model, tmp_path):
    pipeline = write_pipeline(tmp_path / "pipeline.toml", f"""
        [pipeline]
        name = "dpo-report"
        seed = 7

        [model]
        path = {json.dumps(str(tiny_model))}

        [data.pairs]
        loader = "json"
        path = {json.dumps(str(DATA / "dpo.json"))}
        format = "sharegpt_preference"
        eval_fraction = 0.4

        [[stages]]
        method = "dpo"
        data = "pairs"
        max_steps = 3
        batch_size = 2
        logging_steps = 1
        learning_rate = 1e-3

        [[evaluate]]
        evaluator = "preference"
        data = "pairs"
        before = true
        require = ["pairs == base", "accuracy >= 0"]
    """)
    page = (run(pipeline, tmp_path / "run") / "report.html").read_text()
    rewards = page.split(">dpo: rewards</text>")[1].split("</svg>")[0]
    # TRL's rewards/chosen, rejected, accuracies and margins, one curve each, a point per step.
    assert rewards.count("<polyline") >= 3 and "rewards/margins" in rewards
    assert all(len(p.split()) == 3 for p in polylines(rewards))
    assert "Requirements: 2 of 2 hold" in page
    assert "<td>mean_margin</td>" in page  # the preference evaluation, before → after


def test_the_step_count_is_the_trainers_not_the_last_logged_step(tiny_model, tmp_path):
    """7 steps logged every 3: logging ends at step 6, yet the stage took 7 steps."""
    pipeline = tiny_pipeline(tmp_path, tiny_model)
    out = run(pipeline, tmp_path / "run", "--set", "stages[0].max_steps=7",
              "--set", "stages[0].logging_steps=3")
    logged = [r["step"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
              if "loss" in r and "train_loss" not in r]
    assert logged == [3, 6]
    page = (out / "report.html").read_text()
    training = page.split("<h2>Training</h2>")[1].split("<h3>")[0]
    row = re.search(r"<tr><td>sft</td><td class=\"num\">([^<]+)</td>", training)
    assert row is not None and row[1] == "7"
    summary = (out / "summary.md").read_text()
    assert "| stage | steps |" in summary
    assert re.search(r"^\| sft \| 7 \|", summary, re.MULTILINE), summary
