"""`ftp new plugin NAME`: the template, a generated plugin pip-installed, tested and used."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ftp.scaffold import Names, render
from ftp.testing import make_tiny_causal_lm, run_cli, write_pipeline
from ftp.testing import run_ftp as ftp

ROOT = Path(__file__).resolve().parent.parent
CONTRIB = ROOT / "contrib" / "ftp-template"


def env(site: Path | None = None) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FTP_")}
    base.pop("PYTHONPATH", None)
    if site is not None:
        base["PYTHONPATH"] = str(site)
    return base



def test_contrib_template_is_exactly_what_ftp_new_plugin_writes():
    expected = render(Names.from_name("template"))
    skip = {"__pycache__", ".pytest_cache", "build", "dist"}
    actual = {p.relative_to(CONTRIB): p.read_text(encoding="utf-8")
              for p in CONTRIB.rglob("*")
              if p.is_file() and not skip & set(p.relative_to(CONTRIB).parts)
              and ".egg-info" not in str(p)}
    assert sorted(actual) == sorted(expected)
    for path, text in expected.items():
        assert actual[path] == text, f"contrib/ftp-template/{path} differs from the template"


def test_names_come_from_name():
    names = Names.from_name("acme-qa")
    assert (names.plugin, names.package, names.distribution) == (
        "acme-qa", "ftp_acme_qa", "ftp-acme-qa")
    assert Names.from_name("ftp-acme") == Names.from_name("acme")


def test_bad_name_and_occupied_folder_are_one_line_errors(tmp_path):
    result = run_cli("new", "plugin", "Acme QA", "--dir", str(tmp_path / "x"))
    assert result.exit_code == 2
    assert result.stderr == ("error: plugin name 'Acme QA': use lower-case letters and digits, "
                             "words joined by hyphens, starting with a letter (e.g. 'sql-data')\n")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    result = run_cli("new", "plugin", "acme", "--dir", str(tmp_path / "taken"))
    assert result.exit_code == 2
    assert "already exists and is not empty" in result.stderr
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`ftp new plugin acme-qa`, then `pip install` of it into a folder put on PYTHONPATH."""
    work = tmp_path_factory.mktemp("new-plugin")
    made = ftp("new", "plugin", "acme-qa", cwd=work)
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("created ftp-acme-qa: distribution ftp-acme-qa, package "
                                  "ftp_acme_qa, plugin 'acme-qa'")
    # The test extra, so that the pytest it suggests is there.
    assert made.stdout.splitlines()[1] == ('next: pip install -e "ftp-acme-qa[test]" && '
                                           "ftp plugins && pytest ftp-acme-qa")
    site = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(site), str(work / "ftp-acme-qa")],
                   check=True, capture_output=True, timeout=300)
    return {"work": work, "plugin": work / "ftp-acme-qa", "site": site}


def test_generated_plugin_is_installed_with_its_components(generated):
    out = ftp("plugins", "--json", cwd=generated["work"], site=generated["site"])
    assert out.returncode == 0, out.stderr
    info = {p["name"]: p for p in json.loads(out.stdout)}["acme-qa"]
    assert (info["status"], info["distribution"], info["version"]) == ("ok", "ftp-acme-qa",
                                                                       "0.1.0")
    assert sorted(c["name"] for c in info["components"]) == [
        "acme-qa-exact-match", "acme-qa-hf", "acme-qa-keywords", "acme-qa-normtune", "acme-qa-qa",
        "acme-qa-sqlite"]


def test_generated_plugin_tests_pass_as_generated(generated):
    # Its whole-pipeline test is the same code as contrib/ftp-template's, which the suite
    # runs; here the components, registration and command tests run in its own folder.
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-k", "not every_component"], cwd=generated["plugin"],
                         env=env(generated["site"]), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "13 passed, 1 deselected" in out.stdout


def test_generated_plugin_is_used_in_a_pipeline(generated):
    work, site = generated["work"], generated["site"]
    with sqlite3.connect(work / "qa.db") as db:
        db.execute("CREATE TABLE faq (question TEXT, answer TEXT)")
        db.executemany("INSERT INTO faq VALUES (?, ?)",
                       [(f"What is {i} plus {i}?", str(2 * i)) for i in range(6)])
    tables = ftp("acme-qa", "tables", "qa.db", cwd=work, site=site)
    assert tables.stdout == "faq: 6 rows; columns: question, answer\n", tables.stderr
    model = make_tiny_causal_lm(work / "tiny")
    write_pipeline(work / "pipeline.toml", f"""
        [pipeline]
        name = "acme"

        [model]
        provider = "acme-qa-hf"
        path = "{model}"

        [data.faq]
        loader = "acme-qa-sqlite"
        path = "qa.db"
        query = "SELECT question, answer FROM faq"
        format = "acme-qa-qa"
        format_options = {{ context = "" }}
        eval_fraction = 0.5

        [[stages]]
        method = "acme-qa-normtune"
        data = "faq"
        max_steps = 1

        [[evaluate]]
        evaluator = "acme-qa-exact-match"
        data = "faq"
        max_new_tokens = 3
    """)
    out = ftp("run", "pipeline.toml", "-o", "run", cwd=work, site=site)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    results = json.loads((work / "run" / "results.json").read_text())
    [(stage, evaluations)] = results["stages"].items()
    assert evaluations["acme-qa-exact-match"]["metrics"]["rows"] == 3
    csv = (work / "run" / "metrics.csv").read_text().splitlines()
    assert csv[0] == "stage,evaluation,metric,value" and len(csv) == 4


def test_generated_plugin_reward_drives_a_grpo_run(generated):
    """A third-party reward, pip-installed, scores the completions of a GRPO run via the CLI."""
    work, site = generated["work"], generated["site"]
    model = make_tiny_causal_lm(work / "tiny-grpo")
    rows = [{"prompt": f"Name two colours, {i}.", "keywords": ["red", "blue"]} for i in range(4)]
    (work / "topics.json").write_text(json.dumps(rows), encoding="utf-8")
    write_pipeline(work / "grpo.toml", f"""
        [pipeline]
        name = "acme-grpo"

        [model]
        path = "{model}"

        [data.topics]
        loader = "json"
        path = "topics.json"
        format = "prompt"

        [[stages]]
        method = "grpo"
        data = "topics"
        max_steps = 1
        batch_size = 4
        num_generations = 2
        max_completion_length = 4
        logging_steps = 1
        rewards = [{{ reward = "acme-qa-keywords", weight = 1.0 }}]
    """)
    out = ftp("run", "grpo.toml", "-o", "run-grpo", cwd=work, site=site)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    logged = [json.loads(line) for line in
              (work / "run-grpo" / "metrics.jsonl").read_text().splitlines()]
    step = next(m for m in logged if "loss" in m)
    assert 0.0 <= step["rewards/acme-qa-keywords/mean"] <= 1.0
    scored = [json.loads(line) for line in
              (work / "run-grpo" / "stages" / "grpo" / "completions.jsonl").read_text()
              .splitlines()]
    assert len(scored) == 4 and {s["reward"] for s in scored} == {"acme-qa-keywords"}
    assert all(s["row"] == {"keywords": ["red", "blue"]} for s in scored)
