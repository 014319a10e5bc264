"""report.html of every kind of run, rendered by headless Chromium and checked for what that
kind should show: each method's own curves (rewards for the preference methods and GRPO), its
evaluation's metrics (accuracy for classifiers and reward models, perplexity for continued
pretraining) and a section per stage of a multi-stage run.

Each run is a few steps of a tiny random model. Set FTP_KEEP_SCREENSHOTS=FOLDER to keep the
screenshots and look at them.
"""

import csv
import os
import re
import shutil
from pathlib import Path

import pytest

from ftp.testing import data_section, evaluate_section, stage_section, tiny_pipeline
from tests.test_report import run
from tests.test_report_browser import browse

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

DATA = Path(__file__).parent / "data"
WIDTH, HEIGHT = 1280, 3200
MODEL = "{model}"  # filled in per run

PAIRS = data_section("pairs", loader="json", path=DATA / "dpo.json",
                     format="sharegpt_preference", eval_fraction=0.4)
PREFERENCE_EVAL = evaluate_section("preference", data="pairs", before=True)


def stage(method: str, data: str, steps: int = 2, batch: int = 2, extra: str = "") -> str:
    return stage_section(method, data, max_steps=steps, batch_size=batch, extra=extra)


def sentiment_csv(folder: Path) -> Path:
    words = [("a warm , funny film", "positive"), ("a dull , empty film", "negative"),
             ("i loved it", "positive"), ("i hated it", "negative")] * 3
    path = folder / "reviews.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["review", "sentiment"])
        writer.writerows(words)
    return path


def corpus(folder: Path) -> Path:
    path = folder / "corpus.txt"
    path.write_text("\n".join(f"line {i} of the tiny corpus, with some words in it." * 2
                              for i in range(20)) + "\n", encoding="utf-8")
    return path


#: Per kind: the pipeline's data, stages and evaluations, and what its report must show
#: (text in the page; a chart title, e.g. ``>dpo: rewards<``, is written as ``chart:TITLE``).
KINDS: dict[str, tuple[str, list[str]]] = {
    "multistage": ("\n".join([
        data_section("notes", loader="text", path="corpus.txt", split="line", format="text",
                     eval_fraction=0.2),
        data_section("identity", loader="json", path=DATA / "alpaca.json", format="alpaca",
                     placeholders={"name": "Nova", "author": "Northwind Labs"}),
        PAIRS, stage("cpt", "notes", batch=4, extra="block_size = 32"),
        stage("sft", "identity", batch=4), stage("dpo", "pairs"),
        evaluate_section("perplexity", data="notes", block_size=32, before=True,
                         after=["cpt"]),
        PREFERENCE_EVAL]), ["<h3>cpt</h3>", "<h3>sft</h3>", "<h3>dpo</h3>", "chart:cpt: loss",
                       "chart:sft: loss", "chart:dpo: rewards", "<h3>perplexity</h3>",
                       "<td>perplexity</td>", "after cpt", "after dpo", "<td>mean_margin</td>",
                       "<th>blocks</th>"]),
    "kto": ("\n".join([
        data_section("answers", loader="json", path=DATA / "kto.json", format="kto"),
        stage("kto", "answers"),
        evaluate_section("generate", before=True, prompts=["Who are you?"], max_new_tokens=4)]),
        ["chart:kto: loss", "chart:kto: rewards", "rewards/chosen", "<h2>Answers</h2>"]),
    # TRL's ORPO counts no input tokens: no tokens/s curve of zeros, no "0 tokens seen".
    "orpo": (PAIRS + stage("orpo", "pairs") + PREFERENCE_EVAL,
             ["chart:orpo: rewards", "rewards/margins", "<td>accuracy</td>",
              "!chart:orpo: tokens/s"]),
    "simpo": (PAIRS + stage("simpo", "pairs") + PREFERENCE_EVAL,
              ["chart:simpo: rewards", "rewards/margins", "<td>accuracy</td>"]),
    "classify": ("\n".join([
        data_section("reviews", loader="csv", path="reviews.csv", format="classification",
                     format_options={"text": "review", "label": "sentiment"}),
        stage("classify", "reviews", batch=4, extra="bf16 = false"),
        evaluate_section("classification", data="reviews", split="all", before=True)]),
        ["chart:classify: loss", "<h3>classification</h3>", "<td>accuracy</td>",
         "<td>macro_f1</td>", "confusion matrix before training",
         "confusion matrix after classify",
         "<th>negative</th>", "<th>positive</th>", "misclassified before training",
         "<th>text</th><th>label</th><th>predicted</th>"]),
    "grpo": ("\n".join([
        data_section("sums", loader="json", path=DATA / "arithmetic.json", format="prompt",
                     format_options={"prompt": "question",
                                     "system_prompt": "Answer in <answer></answer>."},
                     eval_fraction=0.25),
        stage("grpo", "sums", batch=4, extra='''num_generations = 2
max_completion_length = 8
rewards = [{ reward = "length", max = 12, slack = 20 }, { reward = "numeric_answer" }]'''),
        evaluate_section("reward", data="sums", before=True, max_new_tokens=6,
                         rewards=[{"reward": "numeric_answer"}])]),
        ["chart:grpo: rewards", "rewards/numeric_answer/mean", "<td>greedy/reward</td>",
         "<h2>Answers</h2>"]),
    "reward": (PAIRS + stage("reward", "pairs")
               + evaluate_section("reward_accuracy", data="pairs", before=True),
               ["chart:reward: loss", "<h3>reward_accuracy</h3>", "<td>accuracy</td>"]),
}


def kind_pipeline(kind: str, folder: Path, model: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    sentiment_csv(folder)
    corpus(folder)
    body, _ = KINDS[kind]
    return tiny_pipeline(folder / "pipeline.toml", model, body, name=f"{kind}-report")


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_of_run_gets_a_report_showing_its_own_results(kind, tiny_model, tmp_path):
    out = run(kind_pipeline(kind, tmp_path, tiny_model), tmp_path / "run")
    report = out / "report.html"
    dom = browse(report, tmp_path / "profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr
    page = dom.stdout
    def shown(what: str) -> bool:
        return (f">{what[6:]}</text>" if what.startswith("chart:") else what) in page

    missing = [w for w in KINDS[kind][1] if not w.startswith("!") and not shown(w)]
    assert not missing, f"{kind}: the report lacks {missing}"
    wrong = [w[1:] for w in KINDS[kind][1] if w.startswith("!") and shown(w[1:])]
    assert not wrong, f"{kind}: the report shows {wrong}"
    # Every stage's table row says how many steps it took: the trainer's own count.
    training = page.split("<h2>Training</h2>")[1].split("<h3>")[0]
    steps = re.findall(r"<tr><td>[^<]+</td><td class=\"num\">(\d+)</td>", training)
    assert steps and all(s == "2" for s in steps), training
    # Each chart in the page has a curve with points, none empty.
    for svg in re.findall(r"<svg.*?</svg>", page, re.S):
        assert "<polyline" in svg or "<circle" in svg, svg[:300]
    for heading in ("<h2>Evaluations</h2>", "<h2>Data</h2>", "<h2>Versions</h2>"):
        assert heading in page

    shot = tmp_path / "report.png"
    taken = browse(report, tmp_path / "profile-shot", f"--screenshot={shot}",
                   f"--window-size={WIDTH},{HEIGHT}")
    assert taken.returncode == 0 and shot.is_file(), taken.stderr
    keep = os.environ.get("FTP_KEEP_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / f"{kind}.png")
        shutil.copy(report, Path(keep) / f"{kind}.html")
