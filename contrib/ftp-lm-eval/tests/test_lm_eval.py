"""Tests of the ``lm_eval`` evaluator, run against an installed ftp-lm-eval (``pip install .``).

The command-line tests run ``python -m ftp`` in a subprocess on real pipeline files, as a user
would; the scores they find in results.json are checked against ``lm_eval.simple_evaluate``
run directly, through lm_eval's own model loading, on the same saved weights.
"""

import json
import os
import shutil
from pathlib import Path

import pytest

from ftp import EvalContext, UserError
from ftp.testing import make_tiny_causal_lm, write_pipeline
from ftp.testing import run_ftp as ftp

ftp_lm_eval = pytest.importorskip(
    "ftp_lm_eval", reason="ftp-lm-eval is not installed: pip install ./contrib/ftp-lm-eval",
    exc_type=ModuleNotFoundError,
)
LmEval = ftp_lm_eval.LmEval

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SST2 = ftp_lm_eval.BUNDLED_TASKS / "sst2_zeroshot"

YESNO_YAML = """\
task: yesno
dataset_path: json
dataset_kwargs:
  data_files:
    test: questions.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_target: answer
doc_to_choice: ["no", "yes"]
metric_list:
  - metric: acc
"""

QUESTIONS = [
    ("Is water wet?", "yes"), ("Is the sun cold?", "no"), ("Do fish swim?", "yes"),
    ("Can stones fly?", "no"), ("Is ice frozen water?", "yes"), ("Is fire cold?", "no"),
]

TRAIN = [
    {"instruction": "Is this review positive or negative?", "input": text, "output": label}
    for text, label in [
        ("A warm, funny and beautifully acted film.", "positive"),
        ("Dull, overlong and badly written.", "negative"),
        ("The best thing I have seen this year.", "positive"),
        ("A tedious mess with no redeeming moments.", "negative"),
    ]
]



def write_yesno(folder: Path) -> Path:
    task = folder / "yesno"
    task.mkdir(parents=True)
    (task / "yesno.yaml").write_text(YESNO_YAML)
    rows = [{"question": q, "answer": a} for q, a in QUESTIONS]
    (task / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def pipeline(tmp_path: Path, model: str = "unused", options: str = "") -> Path:
    (tmp_path / "train.json").write_text(json.dumps(TRAIN))
    return write_pipeline(tmp_path / "pipeline.toml", f"""
        [pipeline]
        name = "lm-eval-test"

        [model]
        path = "{model}"

        [data.reviews]
        loader = "json"
        path = "train.json"
        format = "alpaca"
        eval_fraction = 0

        [[stages]]
        method = "sft"
        data = "reviews"
        max_steps = 2
        batch_size = 2
        learning_rate = 1e-2
        max_length = 256
        logging_steps = 1

        [[evaluate]]
        evaluator = "lm_eval"
        before = true
        {options}
    """)


def direct_lm_eval(model_dir: Path, task_dirs: list[Path], tasks: list[str], limit: int,
                   seed: int = 42) -> dict:
    """lm_eval on its own: its model loading, its task index, absolute data paths."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=[str(d) for d in task_dirs], include_defaults=False)
    lm = HFLM(pretrained=str(model_dir), device="cpu", dtype="float32", batch_size=8)
    return lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit,
                                   log_samples=False, random_seed=seed, numpy_random_seed=seed,
                                   torch_random_seed=seed, fewshot_random_seed=seed)


def absolute_copy(task: Path, dest: Path) -> Path:
    """Copy a task folder, writing the data path in its YAML as an absolute path."""
    shutil.copytree(task, dest)
    for yaml in dest.glob("*.yaml"):
        text = yaml.read_text()
        for data in dest.iterdir():
            text = text.replace(f"test: {data.name}", f"test: {data}")
        yaml.write_text(text)
    return dest


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "model")


def context(model_dir: Path, stage: str = "base", base_dir: Path | None = None) -> EvalContext:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32")
    model.train()
    return EvalContext(stage=stage, model=model,
                       tokenizer=AutoTokenizer.from_pretrained(model_dir), data=None,
                       base_dir=base_dir or Path.cwd())


def evaluate(model_dir: Path, base_dir: Path | None = None, **options) -> dict:
    return LmEval(LmEval.Config(**options)).evaluate(context(model_dir, base_dir=base_dir))


# -- through the ftp command line ---------------------------------------------------------


def test_plugin_is_installed_and_registers_lm_eval(tmp_path):
    out = ftp("plugins", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    plugins = {p["name"]: p for p in json.loads(out.stdout)}
    assert plugins["lm-eval"]["status"] == "ok"
    assert plugins["lm-eval"]["distribution"] == "ftp-lm-eval"
    assert plugins["lm-eval"]["components"] == [{"kind": "evaluator", "name": "lm_eval"}]


def test_run_scores_match_lm_eval_on_the_same_weights_before_and_after(tmp_path, tiny):
    project = tmp_path / "project"
    project.mkdir()
    write_yesno(project / "tasks")
    path = pipeline(project, model=str(tiny), options="""
        tasks = ["sst2_zeroshot", "yesno"]
        task_dirs = ["tasks"]
        limit = 24
    """)
    elsewhere = tmp_path / "elsewhere"  # relative task_dirs and data files must not use cwd
    elsewhere.mkdir()
    out = ftp("run", str(path), "-o", str(tmp_path / "run"), cwd=elsewhere)
    assert out.returncode == 0, out.stdout + out.stderr
    results = json.loads((tmp_path / "run" / "results.json").read_text())["stages"]
    assert set(results) == {"base", "sft"}

    direct_dirs = [absolute_copy(SST2, tmp_path / "direct" / "sst2"),
                   absolute_copy(project / "tasks" / "yesno", tmp_path / "direct" / "yesno")]
    for stage, weights in [("base", tiny), ("sft", tmp_path / "run" / "model")]:
        got = results[stage]["lm_eval"]
        metrics = got["metrics"]
        assert set(metrics) == {"sst2_zeroshot/acc", "sst2_zeroshot/acc_stderr",
                                "yesno/acc", "yesno/acc_stderr"}
        assert all(0 <= v <= 1 for v in metrics.values())
        assert got["tasks"]["sst2_zeroshot"] == {
            "rows": 24, "rows_available": 500, "num_fewshot": 0, "version": 1.0}
        assert got["tasks"]["yesno"]["rows"] == len(QUESTIONS)
        want = direct_lm_eval(weights, direct_dirs, ["sst2_zeroshot", "yesno"], limit=24)
        assert metrics["sst2_zeroshot/acc"] == want["results"]["sst2_zeroshot"]["acc,none"]
        assert metrics["yesno/acc"] == want["results"]["yesno"]["acc,none"]
        assert metrics["sst2_zeroshot/acc_stderr"] == pytest.approx(
            want["results"]["sst2_zeroshot"]["acc_stderr,none"])
    assert "sst2_zeroshot/acc = " in out.stdout


def test_validate_reports_bad_options_with_their_toml_path(tmp_path):
    path = pipeline(tmp_path, options="""
        task = ["sst2_zeroshot"]
        limit = 1.5
        batch_size = 0
        num_fewshot = -1
    """)
    out = ftp("validate", str(path), cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    err = out.stderr
    assert "evaluate[0].task: unknown key (did you mean 'tasks'?)" in err
    assert "evaluate[0].tasks: required key is missing" in err
    assert "evaluate[0].limit: Value error, give a whole number of rows" in err
    assert "evaluate[0].batch_size: Input should be greater than 0" in err
    assert "evaluate[0].num_fewshot: Input should be greater than or equal to 0" in err
    assert "Traceback" not in err


def test_validate_refuses_an_empty_task_list(tmp_path):
    out = ftp("validate", str(pipeline(tmp_path, options="tasks = []")), cwd=tmp_path)
    assert out.returncode == 2
    assert "evaluate[0].tasks: List should have at least 1 item" in out.stderr


def test_unknown_task_fails_the_run_with_one_line(tmp_path, tiny):
    write_yesno(tmp_path / "tasks")
    (tmp_path / "tasks" / "broken.yaml").write_text("task: [unclosed\n")
    path = pipeline(tmp_path, model=str(tiny), options="""
        tasks = ["yesno", "sst2_zero"]
        task_dirs = ["tasks"]
    """)
    out = ftp("run", str(path), "-o", str(tmp_path / "run"), cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out.stderr
    line = errors[0]
    assert "evaluate 'lm_eval' before training" in line
    assert "lm_eval task 'sst2_zero' not found in the task folders" in line
    assert "local tasks: sst2_zeroshot, yesno" in line
    assert "broken.yaml" in line


# -- the evaluator in-process -------------------------------------------------------------


def test_metrics_option_keeps_only_the_named_metrics(tiny):
    got = evaluate(tiny, tasks=["sst2_zeroshot"], limit=4, metrics=["acc"], stderr=False)
    assert list(got["metrics"]) == ["sst2_zeroshot/acc"]
    with pytest.raises(UserError, match=r"metrics \['f1'\] were not computed .* computed: acc"):
        evaluate(tiny, tasks=["sst2_zeroshot"], limit=4, metrics=["f1"])


def test_fractional_limit_and_training_mode_is_restored(tiny):
    ctx = context(tiny)
    got = LmEval(LmEval.Config(tasks=["sst2_zeroshot"], limit=0.01)).evaluate(ctx)
    assert got["tasks"]["sst2_zeroshot"]["rows"] == 5
    assert ctx.model.training


def test_relative_task_dirs_follow_the_pipeline_folder(tmp_path, tiny, monkeypatch):
    write_yesno(tmp_path / "tasks")
    monkeypatch.chdir(tmp_path.parent)
    got = evaluate(tiny, base_dir=tmp_path, tasks=["yesno"], task_dirs=["tasks"])
    assert got["tasks"]["yesno"]["rows"] == len(QUESTIONS)


def test_missing_folder_and_data_file_are_user_errors(tmp_path, tiny):
    with pytest.raises(UserError, match="lm_eval task folder not found: .*nowhere"):
        evaluate(tiny, tasks=["yesno"], task_dirs=[str(tmp_path / "nowhere")])
    write_yesno(tmp_path / "tasks")
    (tmp_path / "tasks" / "yesno" / "questions.jsonl").unlink()
    with pytest.raises(UserError, match=r"lm_eval task 'yesno' \(.*yesno.yaml\): data file "
                                        r"not found: .*questions.jsonl"):
        evaluate(tiny, tasks=["yesno"], task_dirs=[str(tmp_path / "tasks")])


def test_flatten_metrics_names_filters_and_drops_non_numbers():
    out = {"results": {"gsm": {"alias": "gsm", "exact_match,strict-match": 0.25,
                               "exact_match_stderr,strict-match": "N/A",
                               "acc,none": 0.5, "acc_stderr,none": 0.1, "sample_len": 8}}}
    assert ftp_lm_eval.flatten_metrics(out) == {
        "gsm/acc": 0.5, "gsm/acc_stderr": 0.1, "gsm/exact_match/strict-match": 0.25}
    assert ftp_lm_eval.flatten_metrics(out, keep=["exact_match"]) == {
        "gsm/exact_match/strict-match": 0.25}


def test_plugin_uses_only_ftps_public_api():
    import ast

    import ftp

    for source in Path(ftp_lm_eval.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ftp"):
                if node.module == "ftp":
                    assert {a.name for a in node.names} <= set(ftp.__all__), source
                else:
                    assert node.module.startswith("ftp_lm_eval"), (source, node.module)


# -- metric names declared for `require`, checked by ftp validate -------------------------


def validate(project: Path, options: str, cwd: Path, model: Path):
    return ftp("validate", str(pipeline(project, model=str(model), options=options)), cwd=cwd)


def test_validate_knows_the_metrics_of_local_tasks_and_catches_misspellings(tmp_path, tiny):
    project = tmp_path / "project"
    project.mkdir()
    write_yesno(project / "tasks")
    elsewhere = tmp_path / "elsewhere"  # task_dirs resolve against the pipeline's folder
    elsewhere.mkdir()
    tasks = 'tasks = ["sst2_zeroshot", "yesno"]\ntask_dirs = ["tasks"]\n'
    good = validate(project, tasks + 'require = ["sst2_zeroshot/acc >= 0.5", '
                    '"yesno/acc_stderr < 1"]', elsewhere, tiny)
    assert good.returncode == 0, good.stdout + good.stderr

    for wrong, hint in [("sst2_zeroshot/accuracy", "did you mean 'sst2_zeroshot/acc'"),
                        ("sst2_zeroshott/acc", "did you mean 'sst2_zeroshot/acc'"),
                        ("yesno/acc_norm", "")]:
        out = validate(project, tasks + f'require = ["{wrong} >= 0.5"]', elsewhere, tiny)
        assert out.returncode == 2, out.stdout + out.stderr
        assert "Traceback" not in out.stderr
        line = next(x for x in out.stderr.splitlines() if "require[0]" in x)
        assert f"evaluator 'lm_eval' reports no metric '{wrong}'" in line
        assert hint in line
        assert ("it reports: sst2_zeroshot/acc, sst2_zeroshot/acc_stderr, yesno/acc, "
                "yesno/acc_stderr") in line

    # The metrics option and stderr = false narrow what is reported.
    narrow = validate(project, tasks + 'metrics = ["acc"]\nstderr = false\n'
                      'require = ["yesno/acc_stderr < 1"]', elsewhere, tiny)
    assert narrow.returncode == 2
    assert "it reports: sst2_zeroshot/acc, yesno/acc" in narrow.stderr


def test_lm_evals_own_tasks_have_unknown_metric_names_and_accept_any(tmp_path, tiny):
    """Its tasks, groups and tags are not looked up at validation: any name passes, but a
    ``metrics`` option still decides the metric part."""
    anything = validate(tmp_path, 'tasks = ["hellaswag"]\nrequire = ["hellaswag/acc_norm >= 0"]',
                        tmp_path, tiny)
    assert anything.returncode == 0, anything.stdout + anything.stderr
    kept = validate(tmp_path, 'tasks = ["hellaswag"]\nmetrics = ["acc"]\n'
                    'require = ["hellaswag/acc_norm >= 0"]', tmp_path, tiny)
    assert kept.returncode == 2, kept.stdout + kept.stderr
    assert "reports no metric 'hellaswag/acc_norm'" in kept.stderr
    assert "it reports: */acc, */acc_stderr" in kept.stderr


def test_declared_names_follow_includes_filters_and_default_metrics(tmp_path):
    from ftp_lm_eval.declared import declared_metrics

    (tmp_path / "base.yaml").write_text("output_type: generate_until\nfilter_list:\n"
                                        "  - name: strict\n  - name: flexible\n")
    (tmp_path / "gen.yaml").write_text("include: base.yaml\ntask: gen\n")
    (tmp_path / "mc.yaml").write_text("task: mc\noutput_type: multiple_choice\n")
    (tmp_path / "fn.yaml").write_text("task: fn\nmetric_list:\n"
                                      "  - metric: !function utils.score\n")
    assert declared_metrics(["gen", "mc", "fn"], [tmp_path], None, False) == (
        "gen/exact_match/strict", "gen/exact_match/flexible", "mc/acc", "mc/acc_norm", "fn/*")
