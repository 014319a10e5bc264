"""SFT on the tiny model: padding-free batches stay separate, and whole runs through the CLI."""

import copy
import hashlib
import json
from pathlib import Path

import pytest

from ftp import IGNORE_INDEX, TrainContext
from ftp.data import fill_placeholders
from ftp.testing import run_cli, run_ftp, write_pipeline
from ftp_builtin.formats.chat import Alpaca
from ftp_builtin.methods.sft import SFT
from ftp_builtin.tokenize import tokenize_records

DATA = Path(__file__).parent / "data"
PLACEHOLDERS = {"name": "Nova", "author": "Northwind Labs"}
STEPS = 20


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def alpaca_records() -> list[dict]:
    rows = json.loads((DATA / "alpaca.json").read_text(encoding="utf-8"))
    return [Alpaca().convert(fill_placeholders(r, PLACEHOLDERS, "test")) for r in rows]


def load(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)


def per_example_loss(model, rows) -> float:
    """Each example alone through the model; the mean over all their labelled tokens."""
    import torch

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for r in rows:
            labels = torch.tensor([r["labels"]])
            n = int((labels[0, 1:] != IGNORE_INDEX).sum())
            total += model(input_ids=torch.tensor([r["input_ids"]]), labels=labels).loss.item() * n
            count += n
    return total / count


# --- padding-free batches ---------------------------------------------------------------------


def test_padding_free_batch_loss_is_the_per_example_loss(tiny_model):
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    tok, model = load(tiny_model)
    rows = tokenize_records(tok, alpaca_records(), max_length=None).rows
    batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(rows)

    lengths = [len(r["input_ids"]) for r in rows]
    assert batch["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in batch
    starts = [sum(lengths[:i]) for i in range(len(rows))]
    assert batch["position_ids"][0, starts].tolist() == [0] * len(rows)
    # No example learns to predict the first token of the next one.
    assert batch["labels"][0, starts].tolist() == [IGNORE_INDEX] * len(rows)
    assert batch["labels"][0].tolist() == [lab for r in rows for lab in r["labels"]]

    expected = per_example_loss(model, rows)
    with torch.no_grad():
        # use_cache=False as in training (Trainer sets it): transformers only separates packed
        # sequences by their position_ids when no cache is built.
        packed = model(**batch, use_cache=False).loss.item()
        # The same tokens as one long sequence do attend across examples: the check can tell.
        leaky = model(input_ids=batch["input_ids"], labels=batch["labels"],
                      use_cache=False).loss.item()
    assert packed == pytest.approx(expected, abs=1e-5)
    assert abs(leaky - expected) > 1e-4


@pytest.mark.parametrize("padding_free", [True, False])
def test_sft_first_step_loss_is_the_per_example_loss(tiny_model, tmp_path, padding_free):
    """Through the method's own trainer, collator and loss: no attention across examples."""
    from transformers import TrainerCallback

    tok, model = load(tiny_model)
    records = alpaca_records()
    rows = tokenize_records(tok, records, max_length=None).rows
    expected = per_example_loss(copy.deepcopy(model), rows)

    logged: list[dict] = []

    class Record(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            logged.append(dict(logs or {}))

    events: list[dict] = []
    method = SFT(SFT.Config(max_steps=1, batch_size=len(records), learning_rate=1e-3,
                            logging_steps=1, bf16=False, padding_free=padding_free))
    model.train()
    method.train(TrainContext(stage="sft", model=model, tokenizer=tok, provider=None,
                              train=records, eval=None, adapter=None,
                              output_dir=tmp_path / "checkpoints", seed=0,
                              callbacks=[Record()], log=events.append))
    first = next(r for r in logged if "loss" in r)
    assert first["loss"] == pytest.approx(expected, abs=1e-5)
    assert events[0]["event"] == "tokenized"
    assert events[0]["loss_tokens"] == sum(sum(lab != IGNORE_INDEX for lab in r["labels"][1:])
                                           for r in rows)


# --- whole runs through the CLI ----------------------------------------------------------------


def make_pipeline(folder: Path, model: Path, stage_extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_pipeline(folder / "pipeline.toml", f"""
        [pipeline]
        name = "sft-test"
        seed = 7

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
        batch_size = 5
        logging_steps = 1
        {stage_extra}

        [[evaluate]]
        evaluator = "loss"
        data = "identity"
        split = "all"
        before = true

        [[evaluate]]
        evaluator = "generate"
        prompts = ["Who are you?", "hi"]
        max_new_tokens = 8
    """)


def run_in_process(pipeline: Path, out: Path) -> Path:
    result = run_cli("run", str(pipeline), "--output-dir", str(out))
    assert result.exit_code == 0, result.output
    return out


def run_subprocess(pipeline: Path, out: Path) -> Path:
    proc = run_ftp("run", str(pipeline), "-o", str(out), cwd=pipeline.parent,
                   OMP_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.fixture(scope="module")
def full_run(one_thread, tiny_model, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("full")
    return run_in_process(make_pipeline(work, tiny_model), work / "run")


@pytest.fixture(scope="module")
def lora_run(one_thread, tiny_model, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("lora")
    extra = "adapter = { r = 4 }\n        assistant_only_loss = false"
    return run_in_process(make_pipeline(work, tiny_model, extra), work / "run")


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def losses(run: Path) -> list[float]:
    return [m["loss"] for m in metrics(run) if "loss" in m]


def results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def tensor_sha(folder: Path, name: str) -> str:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return hashlib.sha256(f.get_tensor(name).numpy().tobytes()).hexdigest()


Q_PROJ = "model.layers.0.self_attn.q_proj.weight"
EMBED = "model.embed_tokens.weight"


def assert_plain_transformers_model(run: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = run / "model"
    assert not (model_dir / "adapter_config.json").exists()
    config = json.loads((model_dir / "config.json").read_text())
    assert not [k for k in config if "peft" in k.lower() or "adapter" in k.lower()]
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert type(model).__name__ == "LlamaForCausalLM"
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert tok.chat_template  # inference renders conversations as training did
    assert tok.eos_token == "<|im_end|>"


def test_full_finetune_run_finishes_with_a_plain_model(full_run, tiny_model):
    assert json.loads((full_run / "run.json").read_text())["status"] == "finished"
    assert_plain_transformers_model(full_run)
    assert not (full_run / "adapter").exists()
    # Training changed the weights, embeddings included.
    assert tensor_sha(full_run / "model", Q_PROJ) != tensor_sha(tiny_model, Q_PROJ)
    assert tensor_sha(full_run / "model", EMBED) != tensor_sha(tiny_model, EMBED)


def test_loss_goes_down_with_a_high_learning_rate(full_run):
    curve = losses(full_run)
    assert len(curve) == STEPS
    assert curve[-1] < 0.75 * curve[0]
    assert min(curve[-5:]) < min(curve[:5])
    tokenized = next(m for m in metrics(full_run) if m.get("event") == "tokenized")
    assert tokenized["examples"] == 5 and tokenized["truncated"] == tokenized["dropped"] == 0
    assert 0 < tokenized["loss_tokens"] < tokenized["tokens"] - tokenized["examples"]


def test_loss_evaluator_before_and_after(full_run):
    stages = results(full_run)["stages"]
    before = stages["base"]["loss"]["metrics"]
    after = stages["sft"]["loss"]["metrics"]
    assert before["examples"] == after["examples"] == 5
    assert before["tokens"] == after["tokens"] > 0
    assert after["loss"] < before["loss"]
    assert "generate" not in stages["base"]  # generate runs after the last stage only


def test_generate_evaluator_records_samples(full_run):
    result = results(full_run)["stages"]["sft"]["generate"]
    samples = result["samples"]
    assert [s["prompt"] for s in samples] == ["Who are you?", "hi"]
    for s in samples:
        assert isinstance(s["answer"], str) and isinstance(s["stopped"], bool)
        assert 0 < s["new_tokens"] <= 8
        assert s["stopped"] or s["new_tokens"] == 8
    assert 0.0 <= result["metrics"]["stopped_fraction"] <= 1.0


def test_same_seed_gives_the_same_numbers_in_a_fresh_process(full_run, tiny_model, tmp_path):
    again = run_subprocess(make_pipeline(tmp_path, tiny_model), tmp_path / "run")
    assert losses(again) == losses(full_run)
    assert results(again)["stages"] == results(full_run)["stages"]
    assert tensor_sha(again / "model", Q_PROJ) == tensor_sha(full_run / "model", Q_PROJ)


def test_lora_run_writes_adapter_and_a_merged_plain_model(lora_run, tiny_model):
    adapter = json.loads((lora_run / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["peft_type"] == "LORA"
    assert (lora_run / "stages" / "sft" / "adapter" / "adapter_config.json").is_file()
    assert_plain_transformers_model(lora_run)
    # The merged LoRA changed the linear layers and nothing else.
    assert tensor_sha(lora_run / "model", Q_PROJ) != tensor_sha(tiny_model, Q_PROJ)
    assert tensor_sha(lora_run / "model", EMBED) == tensor_sha(tiny_model, EMBED)
    assert len(losses(lora_run)) == STEPS


def test_assistant_only_loss_false_learns_every_token(lora_run):
    tokenized = next(m for m in metrics(lora_run) if m.get("event") == "tokenized")
    # Every token but each row's first (nothing predicts it) carries loss.
    assert tokenized["loss_tokens"] == tokenized["tokens"] - tokenized["examples"]
