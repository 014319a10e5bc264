"""Per-turn loss: OpenAI's ``weight: 0 | 1`` on assistant messages, end to end.

On SmolLM2's real tokenizer: ``ftp data preview`` shows no trained token in a weight-0 turn
and every token of a weight-1 (or unweighted) answer trained; a training run trains on
exactly as many tokens as the preview shows, the ``loss`` evaluator scores the same ones, and
the tokenization cache tells a changed weight apart. Bad weights are row errors naming
file:line, and message keys a format does not read are reported with counts.
"""

import json
import re
from pathlib import Path

import pytest

from ftp.testing import run_cli, run_pipeline, write_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")

SYSTEM = {"role": "system", "content": "You are a careful tutor."}
CORRECTED = [
    SYSTEM,
    {"role": "user", "content": "What is 15% of 80?"},
    {"role": "assistant", "content": "15% of 80 is 10.", "weight": 0},
    {"role": "user", "content": "Can you check that?"},
    {"role": "assistant", "content": "I was wrong: 10% of 80 is 8 and 5% is 4, so 12.",
     "weight": 1},
]
LAST_UNTRAINED = [
    {"role": "user", "content": "Capital of Australia?"},
    {"role": "assistant", "content": "Canberra."},
    {"role": "user", "content": "And of Canada?"},
    {"role": "assistant", "content": "Toronto.", "weight": 0},
]
PLAIN = [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}]
ROWS = [CORRECTED, LAST_UNTRAINED, PLAIN]

PIPELINE = """
    [pipeline]
    name = "weights"
    [model]
    path = "{model}"
    [data.chat]
    loader = "json"
    path = "chat.jsonl"
    format = "messages"
    shuffle = false
    {data_extra}
    [[stages]]
    method = "sft"
    data = "chat"
    max_length = 256
    max_steps = 1
    batch_size = 2
    {stage_extra}
    """


def write_rows(folder: Path, rows: list, name: str = "chat.jsonl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("".join(json.dumps({"messages": r}) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def project(folder: Path, rows: list, model: str = "smollm2-135m-instruct",
            data_extra: str = "", stage_extra: str = "") -> Path:
    write_rows(folder, rows)
    return write_pipeline(folder / "p.toml", PIPELINE.format(
        model=model, data_extra=data_extra, stage_extra=stage_extra))


def preview_json(pipeline: Path, *args: str) -> dict:
    result = run_cli("data", "preview", str(pipeline), "--json", "-n", "50", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["datasets"][0]


def ids_of(out) -> list[int]:
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def expected_labels(tok, messages: list[dict], everything: bool = False) -> list[int]:
    """Labels worked out from the chat template alone: each trained answer and its
    <|im_end|>; a weight-0 answer nothing, whatever ``everything`` says."""
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    ids = ids_of(tok.apply_chat_template(plain, tokenize=True))
    labels = list(ids) if everything else [-100] * len(ids)
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = len(ids_of(tok.apply_chat_template(plain[:i], tokenize=True,
                                                   add_generation_prompt=True)))
        n = len(tok(m["content"], add_special_tokens=False)["input_ids"]) + 1  # + <|im_end|>
        assert tok.convert_ids_to_tokens(ids[start + n - 1]) == "<|im_end|>"
        trained = m.get("weight", 1) == 1
        labels[start:start + n] = ids[start:start + n] if trained else [-100] * n
    return labels


# -- what preview shows, token by token ----------------------------------------------------------


@pytest.mark.slow
def test_preview_trains_no_token_of_a_weight_0_turn(tmp_path, smollm2_tokenizer):
    tok = smollm2_tokenizer
    ds = preview_json(project(tmp_path, ROWS))
    assert len(ds["examples"]) == len(ROWS)
    for row, example in zip(ROWS, ds["examples"], strict=True):
        (seq,) = example["sequences"]
        plain = [{"role": m["role"], "content": m["content"]} for m in row]
        assert seq["input_ids"] == ids_of(tok.apply_chat_template(plain, tokenize=True))
        assert seq["labels"] == expected_labels(tok, row)
        assert example["untrained_turns"] == sum(m.get("weight") == 0 for m in row)


@pytest.mark.slow
def test_preview_text_marks_only_the_trained_answers(tmp_path):
    result = run_cli("data", "preview", str(project(tmp_path, ROWS)), "--no-color")
    assert result.exit_code == 0, result.output
    assert re.findall(r"«(.*?)»", result.stdout, re.S) == [
        "I was wrong: 10% of 80 is 8 and 5% is 4, so 12.<|im_end|>",
        "Canberra.<|im_end|>", "Hi!<|im_end|>"]
    assert "15% of 80 is 10.<|im_end|>" in result.stdout  # shown, as context
    assert result.stdout.count("1 assistant turn untrained (weight 0)") == 2


@pytest.mark.slow
def test_weight_0_turns_stay_untrained_when_every_token_is(tmp_path, smollm2_tokenizer):
    pipeline = project(tmp_path, ROWS, stage_extra="assistant_only_loss = false")
    ds = preview_json(pipeline)
    for row, example in zip(ROWS, ds["examples"], strict=True):
        labels = example["sequences"][0]["labels"]
        assert labels == expected_labels(smollm2_tokenizer, row, everything=True)


@pytest.mark.slow
def test_inspect_counts_untrained_turns(tmp_path):
    pipeline = project(tmp_path, ROWS)
    result = run_cli("data", "inspect", str(pipeline), "--out", str(tmp_path / "report"))
    assert result.exit_code == 0, result.output
    assert "assistant turns untrained (weight 0): 2 in 2 rows" in result.stdout
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["datasets"][0]["untrained_turns"] == {"turns": 2, "rows": 2}


# -- training and scoring on the same tokens ------------------------------------------------------


@pytest.fixture(scope="module")
def smol_tiny(tmp_path_factory, smollm2_tokenizer) -> Path:
    """A tiny random Llama with SmolLM2's real tokenizer, so runs tokenize as SmolLM2 does."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = smollm2_tokenizer
    folder = tmp_path_factory.mktemp("smol-tiny")
    config = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=1024, tie_word_embeddings=True,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


RUN_EXTRA = """
    [[evaluate]]
    evaluator = "loss"
    data = "chat"
    split = "train"
    before = true
    max_length = 256
    """


def run(folder: Path, model: Path, rows: list):
    write_rows(folder, rows)
    text = PIPELINE.format(model=model, data_extra="", stage_extra="") + RUN_EXTRA
    return run_pipeline(text, folder)


def tokenized_event(result) -> dict:
    lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    return next(r for r in map(json.loads, lines) if r.get("event") == "tokenized")


@pytest.mark.slow
def test_a_run_trains_and_scores_the_tokens_preview_shows(tmp_path, smol_tiny):
    ds = preview_json(project(tmp_path / "preview", ROWS, model=str(smol_tiny)))
    shown = sum(ex["sequences"][0]["trained"] for ex in ds["examples"])
    result = run(tmp_path / "run", smol_tiny, ROWS)
    event = tokenized_event(result)
    assert event["loss_tokens"] == shown
    assert event["untrained_turns"] == 2
    # The loss evaluator scores the same tokens: none of a weight-0 turn.
    assert result.metrics("base", "loss")["tokens"] == shown
    assert result.metrics("sft", "loss")["tokens"] == shown


@pytest.mark.slow
def test_a_changed_weight_is_not_served_from_the_tokenized_cache(tmp_path, smol_tiny):
    first = tokenized_event(run(tmp_path / "a", smol_tiny, ROWS))
    again = tokenized_event(run(tmp_path / "b", smol_tiny, ROWS))
    assert (first["cached"], again["cached"]) == (False, True)
    reweighted = [[{**m, "weight": 1} if m.get("weight") == 0 else m for m in CORRECTED],
                  *ROWS[1:]]
    changed = tokenized_event(run(tmp_path / "c", smol_tiny, reweighted))
    assert changed["cached"] is False
    assert changed["loss_tokens"] > first["loss_tokens"]


# -- bad weights and unknown keys -----------------------------------------------------------------


def preview_fails(pipeline: Path) -> str:
    result = run_cli("data", "preview", str(pipeline))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    return result.output


@pytest.mark.parametrize(("value", "why"), [
    (2, "'weight' must be 0 or 1; message 2 has 2"),
    (0.5, "'weight' must be 0 or 1; message 2 has 0.5"),
    ("0", "'weight' must be 0 or 1; message 2 has '0'"),
    (True, "'weight' must be 0 or 1; message 2 has True"),
])
def test_a_weight_other_than_0_or_1_is_a_row_error(tmp_path, value, why):
    bad = [dict(m) for m in CORRECTED]
    bad[2]["weight"] = value
    out = preview_fails(project(tmp_path, [PLAIN, bad]))
    assert f"chat.jsonl:2: {why}" in out


def test_a_weight_on_a_user_message_is_a_row_error(tmp_path):
    bad = [{**PLAIN[0], "weight": 0}, PLAIN[1]]
    out = preview_fails(project(tmp_path, [bad]))
    assert "chat.jsonl:1: 'weight' on a message that is not the assistant's; message 0 is a " \
           "user message" in out


def test_a_row_whose_turns_are_all_weight_0_is_refused(tmp_path):
    bad = [PLAIN[0], {**PLAIN[1], "weight": 0}]
    out = preview_fails(project(tmp_path, [PLAIN, bad]))
    assert "chat.jsonl:2: every assistant message has weight 0, so there is nothing to learn" \
           in out


@pytest.mark.slow
def test_bad_weights_are_skipped_with_on_bad_rows_skip(tmp_path):
    bad = [{**PLAIN[0], "weight": 1}, PLAIN[1]]
    pipeline = project(tmp_path, [bad, *ROWS], data_extra='on_bad_rows = "skip"')
    result = run_cli("data", "preview", str(pipeline), "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["datasets"][0]["examples"]) == 3
    assert "skipped 1 bad row: 1 'weight' on a message that is not the assistant's" \
           in result.stderr


@pytest.mark.slow
def test_unknown_message_keys_are_warned_with_counts(tmp_path):
    rows = [[{**PLAIN[0], "name": "ada"}, {**PLAIN[1], "refusal": None}],  # null: nothing
            [{**m, "refusal": "no"} if m["role"] == "assistant" else m for m in CORRECTED]]
    result = run_cli("data", "preview", str(project(tmp_path, rows)), "--json")
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)  # the warning is not in the JSON
    assert ("warning: data.chat: message keys the format does not read were ignored: "
            "'refusal' (2), 'name' (1)") in result.stderr


def test_unknown_message_keys_are_row_errors_when_strict(tmp_path):
    rows = [PLAIN, [{**PLAIN[0], "name": "ada"}, PLAIN[1]]]
    pipeline = project(tmp_path, rows, data_extra='format_options = { unknown_keys = "error" }')
    out = preview_fails(pipeline)
    assert "chat.jsonl:2: unknown message key 'name'; message 0 has ['name']" in out


# -- the other formats ---------------------------------------------------------------------------


def test_a_null_weight_is_no_weight():
    """Tables read through `datasets` give every message every key, null where absent."""
    from ftp_builtin.formats.chat import Messages

    fmt = Messages()
    out = fmt.convert({"messages": [{**m, "weight": m.get("weight")} for m in CORRECTED]})
    assert [m.get("train") for m in out["messages"]] == [None, None, False, None, None]
    assert fmt.notes() == []


def test_sharegpt_reads_weights_and_reports_unknown_keys():
    from ftp_builtin.formats.chat import ShareGPT

    fmt = ShareGPT()
    out = fmt.convert({"conversations": [
        {"from": "human", "value": "2 + 2?"}, {"from": "gpt", "value": "5", "weight": 0},
        {"from": "human", "value": "Sure?"}, {"from": "gpt", "value": "4", "weight": 1,
                                              "mood": "sorry"}]})
    assert [m.get("train") for m in out["messages"]] == [None, False, None, None]
    assert fmt.notes() == ["turn keys the format does not read were ignored: 'mood' (1); map "
                           "them in format_options, or set format_options.unknown_keys = "
                           "\"error\" to refuse such rows"]
    with pytest.raises(ValueError, match="'weight' on a message that is not the assistant's; "
                                         "turn 0 is a user message"):
        fmt.convert({"conversations": [{"from": "human", "value": "x", "weight": 1},
                                       {"from": "gpt", "value": "y"}]})


def test_alpaca_history_is_context_with_train_history_false(smollm2_tokenizer):
    from ftp_builtin.formats.chat import Alpaca
    from ftp_builtin.tokenize import tokenize_records

    row = {"instruction": "And 3 + 3?", "output": "6", "history": [["1 + 1?", "2"]]}
    trained = Alpaca().convert(row)
    context = Alpaca(Alpaca.Config(train_history=False)).convert(row)
    assert context["messages"][1] == {"role": "assistant", "content": "2", "train": False}
    tok = smollm2_tokenizer
    decoded = [tok.decode([t for t in r["labels"] if t != -100])
               for r in tokenize_records(tok, [trained, context], None).rows]
    assert decoded == ["2<|im_end|>6<|im_end|>", "6<|im_end|>"]


def test_a_message_list_completion_trains_its_assistant_turns_only(smollm2_tokenizer):
    """The prompt/completion rule: inside a completion, assistant turns are trained unless
    marked train = false; user (and tool) turns never are."""
    from ftp_builtin.tokenize import tokenize_records

    record = {"prompt": [{"role": "user", "content": "Count."}],
              "completion": [{"role": "assistant", "content": "One."},
                             {"role": "user", "content": "Go on."},
                             {"role": "assistant", "content": "Three.", "train": False},
                             {"role": "user", "content": "Wrong."},
                             {"role": "assistant", "content": "Two."}]}
    tok = smollm2_tokenizer
    (row,) = tokenize_records(tok, [record], None).rows
    assert tok.decode([t for t in row["labels"] if t != -100]) == "One.<|im_end|>Two.<|im_end|>"


# -- the example ----------------------------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "turn_weights.toml"


@pytest.mark.slow
def test_the_example_trains_on_openai_rows_with_weights(tmp_path, smol_tiny):
    rows = [json.loads(line) for line in
            (EXAMPLE.parent / "data" / "tutor_corrections.jsonl").read_text().splitlines()]
    weight_0 = sum(m.get("weight") == 0 for r in rows for m in r["messages"])
    assert weight_0 == 21
    # SmolLM2's tokenizer in a tiny model, one step: the file, format and weights as shipped.
    result = run_cli("run", str(EXAMPLE), "-o", str(tmp_path / "run"),
                     "--set", f"model.path={smol_tiny}", "--set", "stages[0].max_steps=1")
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    event = next(r for r in map(json.loads, lines) if r.get("event") == "tokenized")
    held_out = json.loads((tmp_path / "run" / "data.json").read_text())["tutor"]["eval_rows"]
    assert event["examples"] == len(rows) - held_out
    assert 0 < event["untrained_turns"] < weight_0  # some are in the held-out rows
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["stages"]["sft"]["loss"]["metrics"]["examples"] == held_out
