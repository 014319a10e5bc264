"""Continued pretraining: the `text` loader, EOS-joined token blocks, `cpt` and `perplexity`."""

import copy
import hashlib
import json
import math
from pathlib import Path

import pytest

from ftp import EvalContext, TrainContext, UserError
from ftp.contexts import LoadContext
from ftp.testing import (
    data_section,
    evaluate_section,
    make_tiny_tokenizer,
    run_cli,
    run_ftp,
    stage_section,
    tiny_pipeline,
    write_pipeline,
)
from ftp_builtin.blocks import pack
from ftp_builtin.data import TextLoader
from ftp_builtin.evaluators.perplexity import Perplexity
from ftp_builtin.methods.cpt import CPT

DATA = Path(__file__).parent / "data"
# Three real web-text rows (c4), one of them two lines long.
DOCS = [json.loads(line)["text"] for line in (DATA / "text.jsonl").read_text().splitlines()]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


# --- the `text` loader -------------------------------------------------------------------------


def load_text(path: Path, **options) -> list[str]:
    loader = TextLoader(TextLoader.Config(path=str(path), **options))
    records = loader.load(LoadContext(dataset="t", base_dir=path.parent))
    assert all(list(r) == ["text"] for r in records)
    return [r["text"] for r in records]


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    # A byte-order mark, Windows line ends, a whitespace-only line inside the blank gap.
    path.write_bytes(("\ufeffFirst line.\r\nSecond line of the first paragraph.\r\n"
                      "  \r\n\r\nok\r\nThird paragraph, one line.\r\n\r\n").encode("utf-8"))
    return path


def test_text_loader_one_document_per_line(notes):
    assert load_text(notes) == ["First line.", "Second line of the first paragraph.", "ok",
                                "Third paragraph, one line."]


def test_text_loader_one_document_per_paragraph(notes):
    assert load_text(notes, split="paragraph") == [
        "First line.\nSecond line of the first paragraph.", "ok\nThird paragraph, one line."]


def test_text_loader_one_document_per_file(notes):
    assert load_text(notes, split="file") == [
        "First line.\nSecond line of the first paragraph.\n  \n\nok\nThird paragraph, one line."]


def test_text_loader_skips_short_documents(notes):
    assert load_text(notes, min_chars=3) == ["First line.", "Second line of the first paragraph.",
                                             "Third paragraph, one line."]
    with pytest.raises(UserError, match="no text documents .4 shorter than min_chars = 100"):
        load_text(notes, min_chars=100)


def test_text_loader_reads_a_folder_in_sorted_order(tmp_path):
    (tmp_path / "b.txt").write_text("two\n")
    (tmp_path / "a.txt").write_text("one\n")
    (tmp_path / "c.md").write_text("not read\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.txt").write_text("three\n")
    assert load_text(tmp_path) == ["one", "two"]
    assert load_text(tmp_path, glob="**/*.txt") == ["one", "two", "three"]
    with pytest.raises(UserError, match="no files match glob"):
        load_text(tmp_path, glob="*.csv")


def test_text_loader_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="data file not found: .*missing.txt"):
        load_text(tmp_path / "missing.txt")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1.txt:1: undecodable bytes \(not UTF-8\)"):
        load_text(bad)


def test_text_loader_is_distinct_from_the_contrib_lines_loader():
    assert TextLoader.name == "text"  # the `lines` name belongs to contrib/ftp-example


# --- blocks ------------------------------------------------------------------------------------


def stream_of(tok, texts: list[str]) -> list[int]:
    """What the blocks must hold: each text as plain tokens, then one EOS."""
    out: list[int] = []
    for t in texts:
        out += tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("block_size", [16, 37, 64])
def test_blocks_on_smollm2_are_full_and_eos_joined(smollm2_tokenizer, block_size):
    tok = smollm2_tokenizer
    texts = DOCS * 3
    packed = pack(tok, texts, block_size)
    expected = stream_of(tok, texts)
    assert packed.documents == len(texts) and packed.tokens == len(expected)
    assert [len(b) for b in packed.blocks] == [block_size] * (len(expected) // block_size)
    assert len(packed.blocks) * block_size + packed.dropped_tokens == packed.tokens
    assert 0 <= packed.dropped_tokens < block_size
    kept = [t for b in packed.blocks for t in b]
    assert kept == expected[:len(kept)]  # in order, nothing added or lost but the tail

    # Exactly one EOS per document whose end falls in the kept blocks, and no BOS at all:
    # SmolLM2's tokenizer adds none, and the chat template is not used.
    ends, at = [], 0
    for t in texts:
        at += len(tok(t, add_special_tokens=False)["input_ids"]) + 1
        ends.append(at - 1)  # the position of the document's EOS
    assert kept.count(tok.eos_token_id) == sum(end < len(kept) for end in ends)
    assert [i for i, t in enumerate(kept) if t == tok.eos_token_id] == \
        [e for e in ends if e < len(kept)]
    assert tok.bos_token_id not in kept
    im_start = tok.convert_tokens_to_ids("<|im_start|>")
    assert im_start not in kept  # no chat template


@pytest.mark.slow
def test_special_token_text_in_a_document_is_plain_text(smollm2_tokenizer):
    tok = smollm2_tokenizer
    packed = pack(tok, ["a <|im_end|> b <|im_start|>user", "next"], 4, keep_last=True)
    ids = [t for b in packed.blocks for t in b]
    assert ids.count(tok.eos_token_id) == 2 and ids[-1] == tok.eos_token_id
    assert tok.decode(ids) == "a <|im_end|> b <|im_start|>user<|im_end|>next<|im_end|>"


def test_blocks_keep_the_tokenizers_own_bos_once_and_never_double_eos():
    """Llama-style tokenizers add BOS (some also EOS): each document gets one of each."""
    from tokenizers import processors

    tok = make_tiny_tokenizer()
    bos, eos = "<|endoftext|>", tok.eos_token
    bos_id = tok.convert_tokens_to_ids(bos)
    tok.bos_token = bos
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=[(bos, bos_id), (eos, tok.eos_token_id)])
    texts = ["Hello world", f"{bos}starts with the BOS text", "bye"]
    ids = [t for b in pack(tok, texts, 8, keep_last=True).blocks for t in b]
    assert ids.count(bos_id) == len(texts) and ids.count(tok.eos_token_id) == len(texts)
    starts = [0] + [i + 1 for i, t in enumerate(ids[:-1]) if t == tok.eos_token_id]
    assert [ids[i] for i in starts] == [bos_id] * len(texts)
    assert all(ids[i + 1] != bos_id for i in starts)


def test_training_drops_the_last_partial_block_and_evaluation_keeps_it():
    tok = make_tiny_tokenizer()
    train = pack(tok, DOCS, 50)
    scored = pack(tok, DOCS, 50, keep_last=True)
    assert train.dropped_tokens > 0
    assert scored.blocks[:-1] == train.blocks and len(scored.blocks[-1]) == train.dropped_tokens
    assert scored.dropped_tokens == 0


# --- the method and the evaluator in process ---------------------------------------------------


def load(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)


def block_losses(model, blocks) -> tuple[float, int]:
    """Each block alone through the model's own loss: the summed loss and token count."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for b in blocks:
            ids = torch.tensor([b])
            total += model(input_ids=ids, labels=ids).loss.item() * (len(b) - 1)
            count += len(b) - 1
    return total, count


def test_first_step_loss_is_the_mean_loss_over_every_token_of_the_blocks(tiny_model, tmp_path):
    from transformers import TrainerCallback

    tok, model = load(tiny_model)
    records = [{"text": t} for t in DOCS]
    blocks = pack(tok, DOCS, 32).blocks
    total, count = block_losses(copy.deepcopy(model).eval(), blocks)

    logged: list[dict] = []

    class Record(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            logged.append(dict(logs or {}))

    events: list[dict] = []
    method = CPT(CPT.Config(max_steps=1, batch_size=len(blocks), block_size=32, logging_steps=1,
                            learning_rate=1e-3, bf16=False))
    model.train()
    method.train(TrainContext(stage="cpt", model=model, tokenizer=tok, provider=None,
                              train=records, eval=None, adapter=None,
                              output_dir=tmp_path / "checkpoints", seed=0,
                              callbacks=[Record()], log=events.append))
    first = next(r for r in logged if "loss" in r)
    assert first["loss"] == pytest.approx(total / count, abs=1e-5)
    packed = events[0]
    assert packed["event"] == "packed" and packed["blocks"] == len(blocks)
    assert packed["documents"] == 3 and packed["tokens"] == len(stream_of(tok, DOCS))
    assert packed["tokens"] == 32 * len(blocks) + packed["dropped_tokens"]


def test_cpt_refuses_text_shorter_than_one_block_and_blocks_longer_than_the_context(
        tiny_model, tmp_path):
    tok, model = load(tiny_model)
    ctx = TrainContext(stage="cpt", model=model, tokenizer=tok, provider=None,
                       train=[{"text": "hi"}], eval=None, adapter=None,
                       output_dir=tmp_path, seed=0)
    with pytest.raises(UserError, match="less than one block of block_size = 512"):
        CPT(CPT.Config(bf16=False)).train(ctx)
    with pytest.raises(UserError, match="max_position_embeddings = 512"):
        CPT(CPT.Config(block_size=1024)).train(ctx)


def test_perplexity_is_exp_of_the_mean_loss_over_every_block(tiny_model):
    tok, model = load(tiny_model)
    model.train()
    scored = pack(tok, DOCS, 24, keep_last=True)
    assert len(scored.blocks[-1]) < 24  # the short last block is scored too
    total, count = block_losses(copy.deepcopy(model).eval(), scored.blocks)

    result = Perplexity(Perplexity.Config(block_size=24, batch_size=3)).evaluate(
        EvalContext(stage="base", model=model, tokenizer=tok, data=[{"text": t} for t in DOCS]))
    m = result["metrics"]
    assert m["tokens"] == count == len(stream_of(tok, DOCS)) - len(scored.blocks)
    assert m["blocks"] == len(scored.blocks) and m["documents"] == 3
    assert m["loss"] == pytest.approx(total / count, rel=1e-5)
    assert m["perplexity"] == pytest.approx(math.exp(m["loss"]), rel=1e-9)
    assert model.training  # put back as it was

    # max_blocks (what a rehearsal sets): the first blocks alone, scored the same way.
    first = Perplexity(Perplexity.Config(block_size=24, batch_size=3, max_blocks=2)).evaluate(
        EvalContext(stage="base", model=model, tokenizer=tok, data=[{"text": t} for t in DOCS]))
    total2, count2 = block_losses(copy.deepcopy(model).eval(), scored.blocks[:2])
    assert first["metrics"]["blocks"] == 2 and first["metrics"]["tokens"] == count2
    assert first["metrics"]["loss"] == pytest.approx(total2 / count2, rel=1e-5)


# --- whole runs through the CLI ----------------------------------------------------------------


def corpus_lines() -> list[str]:
    """Twelve documents, one per line."""
    return [d.replace("\n", " ") for d in DOCS * 4]


def make_pipeline(folder: Path, model: Path, adapter: str = "", data_extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.txt").write_text("\n".join(corpus_lines()) + "\n", encoding="utf-8")
    notes = data_section("notes", loader="text", path="corpus.txt", split="line", format="text",
                         eval_fraction=0.2)
    return tiny_pipeline(
        folder / "pipeline.toml", model, notes + data_extra,
        stage_section("cpt", "notes", block_size=32, batch_size=4, learning_rate=1e-2,
                      extra=adapter),
        evaluate_section("perplexity", data="notes", block_size=32, before=True),
        name="cpt-test")


def run_in_process(pipeline: Path, out: Path) -> Path:
    result = run_cli("run", str(pipeline), "--output-dir", str(out))
    assert result.exit_code == 0, result.output
    return out


def tensor_sha(folder: Path, name: str) -> str:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return hashlib.sha256(f.get_tensor(name).numpy().tobytes()).hexdigest()


Q_PROJ = "model.layers.0.self_attn.q_proj.weight"
EMBED = "model.embed_tokens.weight"


def plain_model(run: Path):
    from transformers import AutoModelForCausalLM

    model_dir = run / "model"
    assert not (model_dir / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert type(model).__name__ == "LlamaForCausalLM"
    return model


def check_run(run: Path) -> dict:
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    packed = next(m for m in metrics if m.get("event") == "packed")
    assert packed["stage"] == "cpt" and packed["documents"] == 10 and packed["blocks"] > 0
    assert packed["tokens"] == 32 * packed["blocks"] + packed["dropped_tokens"]
    assert len([m for m in metrics if "loss" in m]) == 2
    stages = json.loads((run / "results.json").read_text())["stages"]
    for stage in ("base", "cpt"):
        m = stages[stage]["perplexity"]["metrics"]
        assert m["perplexity"] == pytest.approx(math.exp(m["loss"]), rel=1e-9)
        assert m["documents"] == 2 and m["tokens"] > 0
    return stages


@pytest.fixture(scope="module")
def full_run(one_thread, tiny_model, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("cpt-full")
    return run_in_process(make_pipeline(work, tiny_model), work / "run")


def test_full_cpt_run_changes_every_weight_and_saves_a_plain_model(full_run, tiny_model):
    stages = check_run(full_run)
    before, after = stages["base"]["perplexity"]["metrics"], stages["cpt"]["perplexity"]["metrics"]
    assert before["tokens"] == after["tokens"] and before["blocks"] == after["blocks"]
    assert after["perplexity"] != before["perplexity"]
    plain_model(full_run)
    assert not (full_run / "adapter").exists()
    assert tensor_sha(full_run / "model", Q_PROJ) != tensor_sha(tiny_model, Q_PROJ)
    assert tensor_sha(full_run / "model", EMBED) != tensor_sha(tiny_model, EMBED)


def test_lora_cpt_run_changes_only_the_adapted_layers(tiny_model, tmp_path):
    run = run_in_process(make_pipeline(tmp_path, tiny_model, "adapter = { r = 4 }"),
                         tmp_path / "run")
    check_run(run)
    assert (run / "adapter" / "adapter_config.json").is_file()
    plain_model(run)
    assert tensor_sha(run / "model", Q_PROJ) != tensor_sha(tiny_model, Q_PROJ)
    assert tensor_sha(run / "model", EMBED) == tensor_sha(tiny_model, EMBED)


def test_lora_cpt_trains_the_embeddings_listed_in_modules_to_save(tiny_model, tmp_path):
    """The documented way to train embeddings and LM head with LoRA (tied in the tiny model)."""
    import torch

    adapter = 'adapter = { r = 4, modules_to_save = ["embed_tokens", "lm_head"] }'
    pipeline = make_pipeline(tmp_path, tiny_model, adapter, "shuffle = false")
    run = run_in_process(pipeline, tmp_path / "run")
    stages = check_run(run)
    saved = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert set(saved["modules_to_save"]) == {"embed_tokens", "lm_head"}
    model = plain_model(run)
    base = load(tiny_model)[1]
    assert not torch.equal(model.model.embed_tokens.weight, base.model.embed_tokens.weight)
    assert not torch.equal(model.lm_head.weight, base.lm_head.weight)
    # The reloaded model is the one that was evaluated, its untied LM head included. With
    # shuffle = false the held-out rows are the corpus's first two lines.
    result = Perplexity(Perplexity.Config(block_size=32)).evaluate(EvalContext(
        stage="cpt", model=model, tokenizer=load(tiny_model)[0],
        data=[{"text": line} for line in corpus_lines()[:2]]))
    assert result["metrics"]["loss"] == pytest.approx(
        stages["cpt"]["perplexity"]["metrics"]["loss"], rel=1e-5)


# --- validation --------------------------------------------------------------------------------


def test_cpt_fed_conversations_is_refused_at_validation(tmp_path):
    pipeline = write_pipeline(tmp_path / "pipeline.toml", f"""
        [model]
        path = "smollm2-135m-instruct"

        [data.identity]
        loader = "json"
        path = {json.dumps(str(DATA / "alpaca.json"))}
        format = "alpaca"

        [[stages]]
        method = "cpt"
        data = "identity"

        [[evaluate]]
        evaluator = "perplexity"
        data = "identity"
    """)
    proc = run_ftp("validate", str(pipeline), cwd=pipeline.parent)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr
    assert "stages[0].data: method 'cpt' trains on" in err and "conversational" in err
    assert "evaluate[0].data: evaluator 'perplexity' reads" in err
    assert "Traceback" not in proc.stdout + err
