"""``ftp data preview`` on SmolLM2's real tokenizer: loss-carrying tokens marked exactly."""

import json
import re

import pytest
from click.testing import CliRunner

from ftp.cli import cli
from ftp.testing import write_pipeline

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome."},
]
OTHER = [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}]


@pytest.fixture
def pipeline(tmp_path):
    (tmp_path / "chat.json").write_text(json.dumps([{"messages": CONVERSATION},
                                                    {"messages": OTHER}]))
    return write_pipeline(tmp_path / "p.toml", """
        [pipeline]
        name = "preview"
        [model]
        path = "smollm2-135m-instruct"
        [data.chat]
        loader = "json"
        path = "chat.json"
        format = "messages"
        shuffle = false
        [[stages]]
        method = "sft"
        data = "chat"
        max_length = 512
        """)


def preview(*args):
    result = CliRunner().invoke(cli, ["data", "preview", *map(str, args)])
    return result


@pytest.mark.slow
def test_trained_tokens_are_marked_exactly(pipeline, smollm2_tokenizer):
    tok = smollm2_tokenizer
    result = preview(pipeline, "-n", 1, "--no-color")
    assert result.exit_code == 0, result.output
    out = result.output
    # Every assistant answer with its end-of-turn token, and nothing else, is marked.
    assert re.findall(r"«(.*?)»", out, re.S) == ["Paris.<|im_end|>", "Rome.<|im_end|>"]
    # The prompt is shown as the template renders it, special tokens visible.
    assert "<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n«" in out
    ids = tok.apply_chat_template(CONVERSATION, tokenize=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    answer = sum(len(tok(t, add_special_tokens=False)["input_ids"]) + 1
                 for t in ("Paris.", "Rome."))
    assert f"[{len(ids)} tokens, {answer} trained]" in out
    assert "train row 0 of 2" in out and "row 1" not in out  # -n 1


@pytest.mark.slow
def test_json_gives_ids_labels_and_tokens(pipeline, smollm2_tokenizer):
    tok = smollm2_tokenizer
    result = preview(pipeline, "--json", "-n", 5)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    (ds,) = data["datasets"]
    assert (ds["dataset"], ds["method"], ds["shape"]) == ("chat", "sft", "conversational")
    assert len(ds["examples"]) == 2  # all there are
    ex = ds["examples"][0]
    (seq,) = ex["sequences"]
    expected = tok.apply_chat_template(CONVERSATION, tokenize=True)
    expected = expected["input_ids"] if hasattr(expected, "keys") else expected
    assert seq["input_ids"] == list(expected)
    assert seq["tokens"] == tok.convert_ids_to_tokens(seq["input_ids"])
    assert len(seq["labels"]) == seq["total"] == len(seq["input_ids"])
    trained = [i for i, lab in enumerate(seq["labels"]) if lab != -100]
    assert all(seq["labels"][i] == seq["input_ids"][i] for i in trained)
    assert seq["trained"] == len(trained)
    assert tok.decode([seq["input_ids"][i] for i in trained]) == "Paris.<|im_end|>Rome.<|im_end|>"
    assert ex["truncated"] is False and ex["dropped"] is False


@pytest.mark.slow
def test_colour_on_request_and_no_markers(pipeline):
    result = preview(pipeline, "-n", 1, "--color")
    assert result.exit_code == 0, result.output
    assert "\x1b[" in result.output and "«" not in result.output


@pytest.mark.slow
def test_truncation_is_shown(pipeline):
    result = preview(pipeline, "-n", 1, "--no-color", "--set", "stages[0].max_length=30")
    assert result.exit_code == 0, result.output
    assert "truncated (whole: " in result.output
    assert "[30 tokens," in result.output


def test_unknown_dataset_is_one_line(tmp_path, tiny_model):
    (tmp_path / "chat.json").write_text(json.dumps([{"messages": OTHER}]))
    p = write_pipeline(tmp_path / "p.toml", f"""
        [pipeline]
        name = "preview"
        [model]
        path = "{tiny_model}"
        [data.chat]
        loader = "json"
        path = "chat.json"
        format = "messages"
        [[stages]]
        method = "sft"
        data = "chat"
        """)
    result = preview(p, "--data", "chta")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --data: no dataset named 'chta' (did you mean 'chat'?); datasets: chat"]


def test_dpo_preview_shows_the_tokens_trl_trains_on(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftp import TrainContext
    from ftp_builtin.methods.preference import DPO

    pairs = [{"prompt": [{"role": "user", "content": "Pick a colour."}],
              "chosen": [{"role": "assistant", "content": "Blue."}],
              "rejected": [{"role": "assistant", "content": "I will not say."}]}]
    tok = AutoTokenizer.from_pretrained(tiny_model)
    method = DPO(DPO.Config(bf16=False, max_length=64, precompute_ref_log_probs=False))
    (example,) = method.tokenize_examples(tok, pairs)
    ctx = TrainContext(stage="dpo", model=AutoModelForCausalLM.from_pretrained(tiny_model),
                       tokenizer=tok, provider=None, train=pairs, eval=None, adapter=None,
                       output_dir=tmp_path, seed=0)
    (row,) = method.trainer(ctx).train_dataset
    for seq in example.sequences:
        answer = row[f"{seq.name}_ids"]
        assert seq.input_ids == row["prompt_ids"] + answer
        assert [t for t in seq.labels if t != -100] == answer
    assert [s.name for s in example.sequences] == ["chosen", "rejected"]


def test_a_method_without_tokenize_examples(tmp_path, tiny_model):
    """Third-party methods need not implement it: preview says so, inspect counts plain tokens."""
    (tmp_path / "plain.py").write_text(
        "from ftp import Method, Shape, hookimpl\n\n\n"
        "class Plain(Method):\n"
        '    """Trains somehow."""\n\n'
        '    name = "plain"\n'
        "    accepts = frozenset({Shape.CONVERSATIONAL})\n\n\n"
        "@hookimpl\n"
        "def ftp_methods():\n"
        "    return [Plain]\n")
    (tmp_path / "chat.json").write_text(json.dumps([{"messages": OTHER}] * 2))
    p = write_pipeline(tmp_path / "p.toml", f"""
        [pipeline]
        name = "plain"
        plugins = ["plain.py"]
        [model]
        path = "{tiny_model}"
        [data.chat]
        loader = "json"
        path = "chat.json"
        format = "messages"
        [[stages]]
        method = "plain"
        data = "chat"
        """)
    result = preview(p, "--allow-code")
    assert result.exit_code == 2
    assert "method 'plain' (plugin 'plain') cannot show how it tokenizes" in result.output
    result = CliRunner().invoke(cli, ["data", "inspect", str(p), "--allow-code",
                                      "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    tokens = report["datasets"][0]["tokens"]
    assert tokens["how"] == "plain text, no chat template" and tokens["truncated"] is None
    assert report["datasets"][0]["duplicates"]["exact_rows"] == 1
