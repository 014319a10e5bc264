"""Multi-stage pipelines: each stage starts from the previous one's weights; a failed stage
keeps what finished and can be resumed with --from-stage."""

import hashlib
import json
from pathlib import Path

import pytest

from ftp.testing import run_ftp as ftp
from ftp.testing import write_pipeline

# Runs in subprocesses compute alike on one thread (OMP_NUM_THREADS, inherited).
pytestmark = pytest.mark.usefixtures("one_thread")

DATA = Path(__file__).parent / "data"
WEIGHT = "model.layers.0.mlp.up_proj.weight"

# A local plugin that records, at the start of each stage's training, a checksum of the
# weights the stage received; and fails stage "b" when FAIL_STAGE_B is set.
RECORDER = '''
import hashlib, json, os
from pathlib import Path
from ftp import hookimpl

@hookimpl
def ftp_trainer_callbacks(stage):
    from transformers import TrainerCallback

    class Record(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            if stage == "b" and os.environ.get("FAIL_STAGE_B"):
                raise RuntimeError("stage b was told to fail")
            params = dict(model.named_parameters())
            ends = ("layers.0.mlp.up_proj.weight", "layers.0.mlp.up_proj.base_layer.weight")
            name = next(n for n in params if n.endswith(ends))
            tensor = params[name].detach().float().contiguous()
            digest = hashlib.sha256(tensor.numpy().tobytes()).hexdigest()
            out = Path(os.environ["RECORD_DIR"]) / f"{stage}.json"
            out.write_text(json.dumps({"sha": digest}))

    return [Record()]
'''


def sha_of_saved(folder: Path) -> str:
    from safetensors.torch import load_file

    tensor = load_file(str(folder / "model.safetensors"))[WEIGHT].float().contiguous()
    return hashlib.sha256(tensor.numpy().tobytes()).hexdigest()



@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model) -> Path:
    root = tmp_path_factory.mktemp("multistage")
    rows = json.loads((DATA / "alpaca.json").read_text(encoding="utf-8"))
    (root / "d.json").write_text(json.dumps(rows), encoding="utf-8")
    (root / "recorder.py").write_text(RECORDER, encoding="utf-8")
    (root / "records").mkdir()
    write_pipeline(root / "p.toml", f"""
        [pipeline]
        name = "chain"
        [model]
        path = "{tiny_model}"
        [data.d]
        loader = "json"
        path = "d.json"
        format = "alpaca"
        placeholders = {{ name = "Nova", author = "Northwind Labs" }}
        [[stages]]
        name = "a"
        method = "sft"
        data = "d"
        max_steps = 3
        batch_size = 2
        learning_rate = 1e-2
        [[stages]]
        name = "b"
        method = "sft"
        data = "d"
        adapter = {{ r = 4 }}
        bf16 = false  # frozen weights stay exactly as received, for the checksum below
        max_steps = 3
        batch_size = 2
        learning_rate = 1e-2
        [[evaluate]]
        evaluator = "loss"
        data = "d"
        split = "all"
        before = true
        after = "all"
    """)
    return root


@pytest.fixture(scope="module")
def failed_then_resumed(project: Path) -> dict:
    env = {"RECORD_DIR": str(project / "records")}
    failed = ftp("-p", "recorder.py", "run", "p.toml", cwd=project, FAIL_STAGE_B="1", **env)
    run = project / "runs" / "chain"
    after_failure = {
        "status": json.loads((run / "run.json").read_text()),
        "stage_a_model": (run / "stages" / "a" / "model" / "config.json").is_file(),
        "final_model": (run / "model").exists(),
        "results": json.loads((run / "results.json").read_text()),
    }
    resumed = ftp("-p", "recorder.py", "run", "p.toml", "--from-stage", "b", cwd=project, **env)
    return {"failed": failed, "after_failure": after_failure, "resumed": resumed, "run": run}


def test_failed_second_stage_keeps_the_first_and_says_how_to_resume(failed_then_resumed):
    failed = failed_then_resumed["failed"]
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr
    assert "stage 'b'" in failed.stderr and "stage b was told to fail" in failed.stderr
    assert "ftp resume " in failed.stderr
    state = failed_then_resumed["after_failure"]
    assert state["status"]["status"] == "failed"
    assert state["status"]["completed_stages"] == ["a"]
    assert state["stage_a_model"], "stage a's model must be kept"
    assert not state["final_model"], "no final model/ after a failed pipeline"
    assert set(state["results"]["stages"]) == {"base", "a"}


def test_resume_finishes_and_keeps_earlier_results(failed_then_resumed, tiny_model):
    resumed = failed_then_resumed["resumed"]
    assert resumed.returncode == 0, resumed.stderr
    run = failed_then_resumed["run"]
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    results = json.loads((run / "results.json").read_text())
    assert list(results["stages"]) == ["base", "a", "b"]
    base, a, b = (results["stages"][s]["loss"]["metrics"]["loss"] for s in ("base", "a", "b"))
    assert a < base  # stage a learned, and its numbers survived the resume
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(run / "model")


def test_second_stage_starts_from_the_first_stages_weights(failed_then_resumed, project,
                                                           tiny_model):
    run = failed_then_resumed["run"]
    received_by_b = json.loads((project / "records" / "b.json").read_text())["sha"]
    received_by_a = json.loads((project / "records" / "a.json").read_text())["sha"]
    assert received_by_a == sha_of_saved(Path(tiny_model))
    assert received_by_b == sha_of_saved(run / "stages" / "a" / "model")
    assert received_by_b != received_by_a  # stage a changed the weights b started from


def test_resume_refuses_unknown_or_first_stage(failed_then_resumed, project):
    unknown = ftp("run", "p.toml", "--from-stage", "bb", cwd=project)
    assert unknown.returncode == 2 and "did you mean 'b'" in unknown.stderr
    first = ftp("run", "p.toml", "--from-stage", "a", cwd=project)
    assert first.returncode == 2 and "--overwrite" in first.stderr


CLASSIFIER_PLUGIN = '''
from ftp import Method, Shape, hookimpl

class Head(Method):
    """Pretends to need a classifier model (validation only)."""
    name = "head"
    task = "sequence-classification"
    accepts = frozenset({Shape.CONVERSATIONAL})

@hookimpl
def ftp_methods():
    return [Head]
'''


def test_chain_validation_refuses_a_language_stage_after_a_classifier(project):
    (project / "headplugin.py").write_text(CLASSIFIER_PLUGIN, encoding="utf-8")
    text = (project / "p.toml").read_text()
    first, second = text.split("[[stages]]")[1:3]
    head_stage = '\nname = "a"\nmethod = "head"\ndata = "d"\n'
    (project / "bad.toml").write_text(text.replace(first, head_stage))
    assert second in (project / "bad.toml").read_text()
    result = ftp("-p", "headplugin.py", "validate", "bad.toml", cwd=project)
    assert result.returncode == 2
    assert "stages[1].method" in result.stderr
    assert "previous stage 'a' (head) leaves a sequence-classification model" in result.stderr
    # The loss evaluator cannot judge the classifier left after stage a, nor the base model.
    assert "evaluate[0]" in result.stderr and "judges causal-lm models" in result.stderr
