"""``ftp run --rehearse``: the pipeline on a tiny random model of the same architecture and the
real tokenizer, 2 steps per stage, in 2 processes (DDP over gloo), into RUN_DIR.rehearsal with a
report; a pipeline that would fail, fails there with the same line and exit code as the real
run."""

import json
from pathlib import Path

import pytest

from ftp.config import load_pipeline
from ftp.rehearsal import EVAL_ROWS, overrides, processes, report, shrink_config
from ftp.testing import plugin_set, run_ftp, write_pipeline

DATA = Path(__file__).parent / "data"
pytestmark = pytest.mark.usefixtures("one_thread")

# A ChatML template that, like some models' own, refuses a system turn.
NO_SYSTEM = ("{% for m in messages %}{% if m['role'] == 'system' %}"
             "{{ raise_exception('System role not supported') }}{% endif %}"
             "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
             "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def project(root: Path, tiny_model: Path, model_extra: str = "", format_extra: str = "",
            gate: str = "") -> Path:
    (root / "d.json").write_text((DATA / "alpaca.json").read_text(encoding="utf-8"))
    write_pipeline(root / "p.toml", f"""
        [pipeline]
        name = "rh"
        [model]
        path = "{tiny_model}"
        {model_extra}
        [data.d]
        loader = "json"
        path = "d.json"
        format = "alpaca"
        format_options = {{ {format_extra} }}
        placeholders = {{ name = "Nova", author = "Northwind Labs" }}
        [[stages]]
        method = "sft"
        data = "d"
        adapter = {{ r = 4 }}
        bf16 = false
        max_steps = 50
        batch_size = 2
        [[evaluate]]
        evaluator = "generate"
        prompts = ["Who are you?"]
        max_new_tokens = 64
        {gate}
        [[evaluate]]
        evaluator = "loss"
        data = "d"
        split = "all"
    """)
    return root


def test_rehearsal_runs_the_pipeline_small_and_reports(tmp_path: Path, tiny_model: Path) -> None:
    # A gate no random model meets: judged, recorded, and no failure of the rehearsal.
    root = project(tmp_path, tiny_model, gate='require = ["stopped_fraction >= 2"]')
    # Bound for GPUs: refused on this CPU as it is; rehearsed under DDP, and said so.
    with (root / "p.toml").open("a") as f:
        f.write('[distributed]\nstrategy = "fsdp"\nnproc_per_node = "auto"\n'
                'fsdp = { sharding = "full" }\n')
    refused = run_ftp("validate", "p.toml", cwd=root)
    assert refused.returncode != 0 and "FSDP needs GPUs" in refused.stderr + refused.stdout
    done = run_ftp("run", "p.toml", "--rehearse", "-o", "out", cwd=root, OMP_NUM_THREADS="1")
    assert done.returncode == 0, done.stdout + done.stderr
    folder = root / "out.rehearsal"
    assert not (root / "out").exists()  # the real run's folder is untouched
    report = (folder / "rehearsal.md").read_text()
    assert report.startswith("# Rehearsal of 'rh': passed")
    # The distributed path was rehearsed: two processes, one run folder written once.
    assert "Processes: 2 (DDP over gloo on CPU)." in report
    status = json.loads((folder / "run.json").read_text())
    assert status["status"] == "finished" and status.get("processes") == 2
    assert f"at most {EVAL_ROWS} rows" in report
    assert "Requirements: judged, 0 of 1 hold on the random model" in report
    assert "Not rehearsed on this CPU:" in report and "- the fsdp strategy" in report
    loss = json.loads((folder / "results.json").read_text())["stages"]["sft"]["loss"]
    assert loss["metrics"]["examples"] <= EVAL_ROWS, loss
    assert "| sft | sft | lora | 2 |" in report and "load data 'd'" in report
    steps = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    assert max(r.get("step", 0) for r in steps if r.get("stage") == "sft") == 2
    real = json.loads((tiny_model / "config.json").read_text())
    small = json.loads((folder / "model" / "config.json").read_text())
    assert small["num_hidden_layers"] == 2 and small["vocab_size"] == real["vocab_size"]
    assert small["num_attention_heads"] // small["num_key_value_heads"] == \
        real["num_attention_heads"] // real["num_key_value_heads"]
    samples = json.loads((folder / "results.json").read_text())["stages"]["sft"]["generate"]
    assert samples["metrics"]["mean_new_tokens"] <= 8
    # A rehearsal is not resumed.
    refused = run_ftp("resume", "out.rehearsal", cwd=root)
    assert refused.returncode == 2 and "holds a rehearsal" in refused.stderr


def test_a_broken_pipeline_fails_in_rehearsal_as_in_the_real_run(tmp_path: Path,
                                                                 tiny_model: Path) -> None:
    (tmp_path / "no-system.jinja").write_text(NO_SYSTEM)
    root = project(tmp_path, tiny_model,
                   model_extra=f'chat_template = "{tmp_path / "no-system.jinja"}"',
                   format_extra='system_prompt = "You are Nova."')
    rehearsed = run_ftp("run", "p.toml", "--rehearse", cwd=root, OMP_NUM_THREADS="1")
    real = run_ftp("run", "p.toml", "--set", "stages[0].max_steps=2", cwd=root,
                   OMP_NUM_THREADS="1")
    assert real.returncode != 0 and rehearsed.returncode == real.returncode

    def error(result: object) -> str:
        return next(x for x in result.stderr.splitlines() if x.startswith("error:"))  # type: ignore[attr-defined]

    assert "System role not supported" in error(real)
    assert error(rehearsed) == error(real)
    assert "ftp resume" not in rehearsed.stderr  # a rehearsal is rerun, never resumed
    report = (root / "runs" / "rh.rehearsal" / "rehearsal.md").read_text()
    assert report.startswith("# Rehearsal of 'rh': FAILED")
    assert error(real) in report and "Processes: 2" in report


def test_the_distributed_table_is_translated_to_what_the_cpu_can_do(tmp_path: Path,
                                                                    tiny_model: Path) -> None:
    root = project(tmp_path, tiny_model)
    with (root / "p.toml").open("a") as f:
        f.write('[distributed]\nnproc_per_node = 8\nnnodes = 2\nnode_rank = 0\n'
                'rdzv_endpoint = "10.0.0.1:29500"\n')
    p = load_pipeline(root / "p.toml", plugin_set(), [])
    procs = processes(p, None)
    assert procs.count == 2
    assert any("2 machines" in n for n in procs.notes)
    assert any("8 processes per machine: rehearsed with 2" in n for n in procs.notes)
    alone = processes(p, 1)  # --nproc wins; the machines are still not rehearsed
    assert alone.count == 1 and len(alone.notes) == 1 and "2 machines" in alone.notes[0]
    # One batch a step in a rehearsal; the stage's other options are its own.
    accumulated = load_pipeline(root / "p.toml", plugin_set(),
                                ["stages[0].gradient_accumulation=4"])
    items = overrides(accumulated, {}, 2)
    assert "stages[0].gradient_accumulation=1" in items and "stages[0].max_steps=2" in items
    assert "distributed.nproc_per_node=2" in items


def test_a_method_that_cannot_train_in_two_cpu_processes_is_rehearsed_in_one(
        tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = project(tmp_path, tiny_model)
    p = load_pipeline(root / "p.toml", plugin_set(), [])
    assert processes(p, None).count == 2
    monkeypatch.setattr(p.stages[0].method.cls, "cpu_processes", False)
    procs = processes(p, None)
    assert procs.count == 1
    assert procs.notes == ["method(s) sft cannot train in several processes on CPU: the whole "
                           "rehearsal ran in one process"]
    assert "Processes: 1 (no distributed path rehearsed)." in report(p, "m", {}, "", procs)


@pytest.mark.parametrize(("heads", "kv", "hidden", "new"), [
    (9, 3, 576, (3, 1)),     # SmolLM2-135M: 3 query heads per key-value head
    (32, 8, 4096, (4, 1)),   # Llama-3-8B: 4 per group
    (12, 12, 768, (4, 4)),   # multi-head attention
])
def test_shrunk_config_keeps_the_grouping(heads: int, kv: int, hidden: int, new: tuple) -> None:
    from transformers import LlamaConfig

    config = LlamaConfig(num_attention_heads=heads, num_key_value_heads=kv, hidden_size=hidden,
                         vocab_size=49152, num_hidden_layers=30)
    shrink_config(config)
    assert (config.num_attention_heads, config.num_key_value_heads) == new
    assert config.num_hidden_layers == 2 and config.vocab_size == 49152
    assert config.hidden_size % config.num_attention_heads == 0
