"""Over-long preference pairs on SmolLM2's real tokenizer: what `keep_end`, `keep_start` and
`drop` keep, the counts on the terminal, in data.json and results.json, and rows left with no
trained token named by file:line (dpo and sft alike)."""

import json
from pathlib import Path

import pytest

from ftp import IGNORE_INDEX, TrainContext
from ftp.testing import run_cli, write_pipeline
from ftp_builtin.evaluators.preference import fitted_pair
from ftp_builtin.methods.preference import DPO, KTO
from ftp_builtin.methods.tokenized import preference_examples
from ftp_builtin.tokenize import render
from ftp_builtin.truncation import fit_pair

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

QUESTION = "Which river flows through Paris?"
#: A long conversation whose last user turn holds the question the answers reply to.
LONG_PROMPT = [
    {"role": "system", "content": "You are a geography tutor. " * 40},
    {"role": "user", "content": "Tell me about France. " * 40},
    {"role": "assistant", "content": "France is a country in Western Europe. " * 20},
    {"role": "user", "content": QUESTION},
]
CHOSEN = [{"role": "assistant", "content": "The Seine flows through Paris."}]
REJECTED = [{"role": "assistant", "content": "The Thames flows through Paris."}]
SHORT = {"prompt": [{"role": "user", "content": "Name a colour."}],
         "chosen": [{"role": "assistant", "content": "Blue."}],
         "rejected": [{"role": "assistant", "content": "Seven."}]}
LONG = {"prompt": LONG_PROMPT, "chosen": CHOSEN, "rejected": REJECTED}
MAX = 128


def test_fit_pair_modes_on_plain_lists():
    prompt, answers = list(range(10)), {"a": [100, 101, 102], "b": [200]}
    kept = fit_pair(prompt, answers, 8, "keep_end")
    assert kept.prompt == [5, 6, 7, 8, 9] and kept.answers == answers and kept.truncated
    start = fit_pair(prompt, answers, 8, "keep_start")
    assert start.prompt == list(range(8)) and not start.trainable
    assert fit_pair(prompt, answers, 8, "drop").dropped
    assert not fit_pair(prompt, answers, 13, "drop").dropped  # fits: untouched
    # Answers too long for the prompt to keep half of max_length: the prompt keeps its last
    # half, the answers are cut at their end.
    long = fit_pair(prompt, {"a": list(range(100, 120))}, 8, "keep_end")
    assert long.prompt == [6, 7, 8, 9] and long.answers == {"a": [100, 101, 102, 103]}


@pytest.fixture(scope="module")
def tiny_smollm2(smollm2_tokenizer, tmp_path_factory) -> Path:
    """A tiny random Llama that uses SmolLM2's real tokenizer and chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = smollm2_tokenizer
    folder = tmp_path_factory.mktemp("tiny-smollm2")
    config = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=1024, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def dpo_rows(tok, model_dir: Path, records: list[dict], tmp_path: Path, **options):
    """What the dpo method trains on, and what it logged."""
    from transformers import AutoModelForCausalLM

    logged: list[dict] = []
    ctx = TrainContext(stage="dpo", model=AutoModelForCausalLM.from_pretrained(model_dir),
                       tokenizer=tok, provider=None, train=records, eval=None, adapter=None,
                       output_dir=tmp_path / "checkpoints", seed=0, log=logged.append)
    method = DPO(DPO.Config(bf16=False, precompute_ref_log_probs=False, **options))
    return method.trainer(ctx).train_dataset, ctx


def test_keep_end_keeps_the_question_and_both_answers_whole(smollm2_tokenizer, tiny_smollm2,
                                                            tmp_path):
    tok = smollm2_tokenizer
    prompt = render(tok, LONG_PROMPT, generation_prompt=True)
    assert len(prompt) > 2 * MAX  # the prompt alone is far longer than max_length
    dataset, _ = dpo_rows(tok, tiny_smollm2, [SHORT, LONG], tmp_path, max_length=MAX)
    assert len(dataset) == 2  # nothing dropped
    row = dataset[1]
    end_of_turn = "<|im_end|>\n"
    for answer, messages in (("chosen", CHOSEN), ("rejected", REJECTED)):
        ids = row[f"{answer}_ids"]
        # Each answer is whole, through its end-of-turn token...
        assert tok.decode(ids) == messages[0]["content"] + end_of_turn
        assert len(row["prompt_ids"]) + len(ids) <= MAX
    longest = max(len(row["chosen_ids"]), len(row["rejected_ids"]))
    # ...and the prompt is the end of the rendered conversation: the question and the
    # generation prompt, exactly as many tokens as leave room for the longer answer.
    assert row["prompt_ids"] == prompt[-(MAX - longest):]
    assert tok.decode(row["prompt_ids"]).endswith(f"{QUESTION}<|im_end|>\n<|im_start|>assistant\n")
    assert dataset[0]["prompt_ids"] == render(tok, SHORT["prompt"], generation_prompt=True)

    # The evaluator and `ftp data preview` keep the same tokens (the evaluator scores the
    # answer through its end-of-turn token, as SFT masks it).
    truncated, rows = fitted_pair(tok, LONG, MAX, "keep_end")
    assert truncated and rows[0]["input_ids"][:len(row["prompt_ids"])] == row["prompt_ids"]
    scored = [t for t in rows[0]["labels"] if t != IGNORE_INDEX]
    assert tok.decode(scored) == CHOSEN[0]["content"] + "<|im_end|>"
    shown = preference_examples(tok, [LONG], ("chosen", "rejected"), MAX)[0]
    assert shown.truncated and not shown.dropped
    assert shown.sequences[0].input_ids == row["prompt_ids"] + row["chosen_ids"]


def test_keep_end_cuts_long_answers_at_their_end(smollm2_tokenizer, tiny_smollm2, tmp_path):
    tok = smollm2_tokenizer
    long_answers = {**LONG, "chosen": [{"role": "assistant", "content": "The Seine. " * 80}]}
    dataset, _ = dpo_rows(tok, tiny_smollm2, [long_answers], tmp_path, max_length=MAX)
    row = dataset[0]
    prompt = render(tok, LONG_PROMPT, generation_prompt=True)
    assert row["prompt_ids"] == prompt[-(MAX // 2):]  # half of max_length stays the prompt's
    assert len(row["prompt_ids"]) + len(row["chosen_ids"]) == MAX
    assert tok.decode(row["chosen_ids"]).startswith("The Seine. The Seine.")
    assert tok.decode(row["rejected_ids"]) == REJECTED[0]["content"] + "<|im_end|>\n"


def test_drop_still_drops_and_counts(smollm2_tokenizer, tiny_smollm2, tmp_path):
    dataset, ctx = dpo_rows(smollm2_tokenizer, tiny_smollm2, [SHORT, LONG], tmp_path,
                            max_length=MAX, truncation_mode="drop")
    assert len(dataset) == 1
    assert dataset[0]["prompt_ids"] == render(smollm2_tokenizer, SHORT["prompt"],
                                              generation_prompt=True)
    shown = preference_examples(smollm2_tokenizer, [LONG], ("chosen", "rejected"), MAX, "drop")
    assert shown[0].dropped


def test_kto_keeps_the_question_of_an_over_long_prompt(smollm2_tokenizer, tiny_smollm2,
                                                      tmp_path):
    from transformers import AutoModelForCausalLM

    tok = smollm2_tokenizer
    records = [{"prompt": SHORT["prompt"], "completion": SHORT["chosen"], "label": True},
               {"prompt": LONG_PROMPT, "completion": REJECTED, "label": False}]
    logged: list[dict] = []
    ctx = TrainContext(stage="kto", model=AutoModelForCausalLM.from_pretrained(tiny_smollm2),
                       tokenizer=tok, provider=None, train=records, eval=None, adapter=None,
                       output_dir=tmp_path / "checkpoints", seed=0, log=logged.append)
    method = KTO(KTO.Config(bf16=False, batch_size=2, max_length=MAX,
                            precompute_ref_log_probs=False))
    trainer = method.trainer(ctx)
    method.prepared(ctx, trainer)
    rows = trainer.train_dataset
    assert len(rows) == 2 and [r["label"] for r in rows] == [True, False]
    assert tok.decode(rows[1]["completion_ids"]) == REJECTED[0]["content"] + "<|im_end|>\n"
    assert tok.decode(rows[1]["prompt_ids"]).endswith(f"{QUESTION}<|im_end|>\n"
                                                      "<|im_start|>assistant\n")
    assert len(rows[1]["prompt_ids"]) + len(rows[1]["completion_ids"]) == MAX
    tokenized = next(m for m in logged if m.get("event") == "tokenized")
    assert (tokenized["examples"], tokenized["truncated"], tokenized["dropped"]) == (2, 1, 0)


# --- whole runs through the CLI -------------------------------------------------------------


def as_sharegpt(record: dict) -> dict:
    roles = {"system": "system", "user": "human", "assistant": "gpt"}
    turns = [{"from": roles[m["role"]], "value": m["content"]} for m in record["prompt"]]
    return {"conversations": turns,
            "chosen": {"from": "gpt", "value": record["chosen"][0]["content"]},
            "rejected": {"from": "gpt", "value": record["rejected"][0]["content"]}}


def pipeline(folder: Path, model: Path, extra: str = "", on_bad_rows: str = "error") -> Path:
    """DPO on 6 pairs, the 3rd (pairs.jsonl:3) far longer than max_length; 2 held out."""
    rows = [SHORT, SHORT, LONG, SHORT, SHORT, SHORT]
    data = folder / "pairs.jsonl"
    data.write_text("".join(json.dumps(as_sharegpt(r)) + "\n" for r in rows), encoding="utf-8")
    return write_pipeline(folder / "pipeline.toml", f"""
        [pipeline]
        name = "trunc"
        seed = 1

        [model]
        path = {json.dumps(str(model))}

        [data.pairs]
        loader = "json"
        path = "pairs.jsonl"
        format = "sharegpt_preference"
        eval_fraction = 0.3
        shuffle = false
        on_bad_rows = "{on_bad_rows}"

        [[stages]]
        method = "dpo"
        data = "pairs"
        max_steps = 1
        batch_size = 2
        max_length = {MAX}
        {extra}

        [[evaluate]]
        evaluator = "preference"
        data = "pairs"
        split = "all"
        max_length = {MAX}
    """)


def test_dpo_run_counts_truncated_pairs_on_the_terminal_and_in_the_run(tiny_smollm2, tmp_path):
    out = tmp_path / "run"
    result = run_cli("run", str(pipeline(tmp_path, tiny_smollm2)), "--output-dir", str(out))
    assert result.exit_code == 0, result.output
    assert (f"warning: train: 1 of 4 pairs are longer than max_length={MAX} tokens"
            in result.output) and "truncation_mode = 'keep_end'" in result.output
    data = json.loads((out / "data.json").read_text())["pairs"]
    assert data["tokenized"]["dpo"]["examples"] == 4
    assert data["tokenized"]["dpo"]["truncated"] == 1
    assert data["tokenized"]["dpo"]["dropped"] == 0
    results = json.loads((out / "results.json").read_text())
    assert results["training"]["dpo"]["tokenized"]["truncated"] == 1
    scored = results["stages"]["dpo"]["preference"]["metrics"]
    assert scored["pairs"] == 6 and scored["truncated"] == 1 and scored["dropped"] == 0
    assert "truncated = 1" in result.output


def test_dpo_run_with_drop_leaves_the_long_pair_out(tiny_smollm2, tmp_path):
    out = tmp_path / "run"
    result = run_cli("run", str(pipeline(tmp_path, tiny_smollm2)), "--output-dir", str(out),
                     "--set", "stages[0].truncation_mode=drop",
                     "--set", "evaluate[0].truncation_mode=drop")
    assert result.exit_code == 0, result.output
    assert "1 of 4 pairs are longer than" in result.output and "were left out" in result.output
    tokenized = json.loads((out / "data.json").read_text())["pairs"]["tokenized"]["dpo"]
    assert tokenized["examples"] == 3 and tokenized["dropped"] == 1
    scored = json.loads((out / "results.json").read_text())["stages"]["dpo"]["preference"]
    assert scored["metrics"]["pairs"] == 5 and scored["metrics"]["dropped"] == 1


def test_keep_start_row_with_no_answer_token_is_named_by_file_and_line(tiny_smollm2,
                                                                       tmp_path):
    keep_start = 'truncation_mode = "keep_start"'
    result = run_cli("run", str(pipeline(tmp_path, tiny_smollm2, keep_start)),
                     "--output-dir", str(tmp_path / "run"))
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "pairs.jsonl:3" in result.output and "no answer token after truncation" \
        in result.output and 'on_bad_rows = "skip"' in result.output

    out = tmp_path / "skip"
    result = run_cli("run", str(pipeline(tmp_path, tiny_smollm2, keep_start, "skip")),
                     "--output-dir", str(out))
    assert result.exit_code == 0, result.output
    assert "skipped 1 training rows" in result.output and "pairs.jsonl:3" in result.output
    data = json.loads((out / "data.json").read_text())["pairs"]
    reason = f"no answer token after truncation to max_length={MAX} (truncation_mode = " \
             "'keep_start')"
    assert data["skipped"] == {reason: 1}
    assert data["tokenized"]["dpo"]["examples"] == 3 and data["tokenized"]["dpo"]["skipped"] == 1


def sft_pipeline(folder: Path, model: Path, on_bad_rows: str) -> Path:
    """SFT on 5 conversations; the 2nd (chats.jsonl:2) answers only after max_length."""
    short = {"messages": SHORT["prompt"] + SHORT["chosen"]}
    rows = [short, {"messages": LONG_PROMPT + CHOSEN}, short, short, short]
    (folder / "chats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows),
                                        encoding="utf-8")
    return write_pipeline(folder / "sft.toml", f"""
        [pipeline]
        name = "sft-trunc"

        [model]
        path = {json.dumps(str(model))}

        [data.chats]
        loader = "json"
        path = "chats.jsonl"
        format = "messages"
        shuffle = false
        on_bad_rows = "{on_bad_rows}"

        [[stages]]
        method = "sft"
        data = "chats"
        max_steps = 1
        max_length = {MAX}
    """)


def test_sft_row_cut_before_its_answer_is_named_by_file_and_line(tiny_smollm2, tmp_path):
    result = run_cli("run", str(sft_pipeline(tmp_path, tiny_smollm2, "error")),
                     "--output-dir", str(tmp_path / "run"))
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "chats.jsonl:2" in result.output and "no trained token after truncation" \
        in result.output

    out = tmp_path / "skip"
    result = run_cli("run", str(sft_pipeline(tmp_path, tiny_smollm2, "skip")),
                     "--output-dir", str(out))
    assert result.exit_code == 0, result.output
    assert "skipped 1 training rows" in result.output and "chats.jsonl:2" in result.output
    data = json.loads((out / "data.json").read_text())["chats"]
    assert data["skipped"] == {f"no trained token after truncation to max_length={MAX}": 1}
    assert data["tokenized"]["sft"]["examples"] == 4


def test_several_datasets_name_the_skipped_row_in_its_own_file(tiny_smollm2, tmp_path):
    """Rows keep their source through concatenation; skip applies when both datasets skip."""
    sft_pipeline(tmp_path, tiny_smollm2, "skip")
    short = {"messages": SHORT["prompt"] + SHORT["chosen"]}
    (tmp_path / "more.jsonl").write_text(json.dumps(short) + "\n", encoding="utf-8")
    text = (tmp_path / "sft.toml").read_text()
    text = text.replace('data = "chats"', 'data = ["more", "chats"]')
    text = text.replace("[[stages]]", '[data.more]\nloader = "json"\npath = "more.jsonl"\n'
                        'format = "messages"\non_bad_rows = "skip"\n\n[[stages]]')
    out = tmp_path / "run"
    result = run_cli("run", str(write_pipeline(tmp_path / "two.toml", text)),
                     "--output-dir", str(out))
    assert result.exit_code == 0, result.output
    assert "skipped 1 training rows" in result.output and "chats.jsonl:2" in result.output
    data = json.loads((out / "data.json").read_text())
    assert data["more+chats"]["skipped"] == {
        f"no trained token after truncation to max_length={MAX}": 1}

    # One dataset that says "error" makes the stage's policy "error".
    strict = text.replace('format = "messages"\non_bad_rows = "skip"', 'format = "messages"')
    result = run_cli("run", str(write_pipeline(tmp_path / "strict.toml", strict)),
                     "--output-dir", str(tmp_path / "strict"))
    assert result.exit_code != 0 and "chats.jsonl:2" in result.output
