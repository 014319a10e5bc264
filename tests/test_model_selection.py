"""``ftp models compare``: candidate base models side by side, through the real CLI.

Two tiny local models (two sizes) on a tiny instruction pipeline give the table, the report
files and a recommendation; published Llama configs given alone (no weights) give the exact
parameter counts of those models and the memory verdicts people ask about ("does an 8B fit a
24 GB GPU with LoRA r16 at 2048 tokens?").
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftp.testing import make_tiny_causal_lm, one_line_error, run_ftp, write_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")

#: Llama-3.2-1B's and Llama-3.1-8B's config.json as published with the models.
LLAMA_1B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu",
    "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192,
    "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
    "use_cache": True, "vocab_size": 128256,
}
LLAMA_8B = {
    **LLAMA_1B, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "rope_scaling": {**LLAMA_1B["rope_scaling"], "factor": 8.0},  # type: ignore[dict-item]
    "tie_word_embeddings": False,
}
del LLAMA_8B["head_dim"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny models, instruction data, the two Llama configs, and two pipelines."""
    root = tmp_path_factory.mktemp("compare")
    make_tiny_causal_lm(root / "tiny-small", hidden_size=32, layers=2)
    make_tiny_causal_lm(root / "tiny-big", hidden_size=64, layers=4, seed=1)
    for name, config in (("llama-1b", LLAMA_1B), ("llama-8b", LLAMA_8B)):
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps(config), encoding="utf-8")
    rows = [{"instruction": f"Question {i}: " + "why " * (i % 5), "input": "",
             "output": f"Answer {i}. " + "yes " * (i % 4)} for i in range(30)]
    (root / "data.json").write_text(json.dumps(rows), encoding="utf-8")
    section = """
        [data.d]
        loader = "json"
        path = "data.json"
        format = "alpaca"
        eval_fraction = 0.2
        """
    write_pipeline(root / "tiny.toml", """
        [pipeline]
        name = "tiny"
        seed = 1

        [model]
        path = "tiny-small"
        candidates = ["tiny-small", "tiny-big", "llama-8b/config.json"]
        """ + section + """
        [[stages]]
        method = "sft"
        data = "d"
        adapter = { type = "lora", r = 4, alpha = 8 }
        epochs = 1
        batch_size = 4
        max_length = 48
        """)
    # The question people ask of an 8B model: LoRA r16 on every linear layer, bf16 weights,
    # one row of 2048 tokens per step.
    write_pipeline(root / "big.toml", """
        [pipeline]
        name = "big"

        [model]
        path = "llama-1b"
        dtype = "bfloat16"
        """ + section + """
        [[stages]]
        method = "sft"
        data = "d"
        adapter = { type = "lora", r = 16, alpha = 32, target_modules = "all-linear" }
        batch_size = 1
        max_length = 2048
        """)
    return root


def _report(folder: Path, out: str) -> dict:
    return json.loads((folder / out / "report.json").read_text(encoding="utf-8"))


def test_two_local_models_compared_on_the_pipeline(folder: Path) -> None:
    # The candidates come from [model] candidates; a config-only 8B rides along for its
    # time estimate at the FLOP rate the tiny models' probes achieved.
    result = run_ftp("models", "compare", "tiny.toml", "--pilot", "2", "-o", "cmp", cwd=folder)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for header in ("parameters", "trained", "architecture", "tok/word", "held-out loss",
                   "after pilot", "measured", "stage time"):
        assert header in out
    assert "tiny-small" in out and "tiny-big" in out and "llama-8b/config.json (config only)" \
        in out
    assert "recommended: " in out
    report = _report(folder, "cmp")
    small, big, eight = report["candidates"]
    assert small["stage"]["shape"]["parameters"] < big["stage"]["shape"]["parameters"]
    for c in (small, big):
        assert c["heldout_loss"] > 0 and c["pilot_loss"] > 0
        assert c["stage"]["probe"]["ok"] and c["stage"]["seconds_per_step"] > 0
        assert c["tokens_per_word"] > 1  # a 512-token BPE splits English words
        assert 0 < c["truncated_rows"] < 24  # the longer rows are cut at max_length = 48
        assert c["template_tokens_per_row"] > 0  # the chat template's own tokens
        assert c["facts"]["chat_template"] == "yes"
    assert eight["config_only"] and eight["heldout_loss"] is None
    assert eight["eta_seconds"] > 0 and "FLOP rate" in eight["eta_how"]
    assert report["recommended"] in {"tiny-small", "tiny-big"}
    assert report["reasons"]
    md = (folder / "cmp" / "report.md").read_text(encoding="utf-8")
    assert "recommended:" in md and "What the cards say" in md
    assert (folder / "cmp" / "candidates.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_a_held_out_split_the_loss_is_scored_on_training_rows(folder: Path) -> None:
    # The quickstart has no held-out split: the choice must still rest on how well each
    # candidate knows the data, not fall to the smallest model (a random one included).
    text = (folder / "tiny.toml").read_text(encoding="utf-8")
    (folder / "no-held-out.toml").write_text(
        text.replace("eval_fraction = 0.2\n", "").replace('name = "tiny"', 'name = "nho"'),
        encoding="utf-8")
    result = run_ftp("models", "compare", "no-held-out.toml", "--candidate", "tiny-small",
                     "--candidate", "tiny-big", "-o", "nho", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert "the pipeline has no held-out split, so it is the loss on the first 200 training " \
        "rows" in result.stdout
    report = _report(folder, "nho")
    for c in report["candidates"]:
        assert c["loss_rows"] == "training" and c["heldout_loss"] > 0
    assert any("loss on training rows (no held-out split)" in r for r in report["reasons"])
    best = min(report["candidates"], key=lambda c: c["heldout_loss"])
    within = [c for c in report["candidates"] if c["heldout_loss"] <= best["heldout_loss"] * 1.05]
    assert report["recommended"] in {c["name"] for c in within}


def test_config_only_candidates_give_published_sizes_and_the_24gb_verdict(folder: Path
                                                                           ) -> None:
    result = run_ftp("models", "compare", "big.toml", "--candidate", "llama-1b/config.json",
                     "--candidate", "llama-8b", "--memory-budget", "24", "-o", "cfg",
                     cwd=folder)
    assert result.returncode == 0, result.stderr
    one, eight = _report(folder, "cfg")["candidates"]
    assert one["stage"]["shape"]["parameters"] == 1_235_814_400
    assert eight["stage"]["shape"]["parameters"] == 8_030_261_248
    assert eight["stage"]["shape"]["trainable"] == 41_943_040  # peft's LoRA r16 all-linear
    assert eight["stage"]["setting"]["sequence"] == 2048
    # sft takes the head's loss a chunk at a time and trains Llama's MLPs lean: the estimate
    # holds one chunk's float32 logits and softmax, and 3 MLP-wide tensors a layer, not 4.
    assert eight["stage"]["shape"]["model_type"] == "llama"
    assert eight["stage"]["shape"]["lean_mlps"] == 32
    assert eight["stage"]["setting"]["head_chunk"] == 1024
    assert eight["stage"]["estimate"]["logits"] == 1024 * 128256 * 8
    tokens, layers = 2048, 32
    assert eight["stage"]["estimate"]["activations"] == tokens * layers * (
        12 * 4096 + 3 * 14336) * 2
    # Without gradient checkpointing the 8B's activations at 2048 tokens do not fit 24 GB;
    # the 1B does, and is recommended (no held-out loss: configs only).
    assert one["fits"] and not eight["fits"]
    assert _report(folder, "cfg")["recommended"] == "llama-1b/config.json"
    # With no held-out loss to compare, the smallest that fits, and the pilot suggested.
    assert "the smallest model (1,235,814,400 parameters) that fits" in result.stdout
    assert "--pilot N" in result.stdout
    checkpointed = run_ftp("models", "compare", "big.toml", "--candidate", "llama-8b",
                           "--memory-budget", "24", "-o", "ckpt",
                           "--set", "stages[0].gradient_checkpointing=true", cwd=folder)
    assert checkpointed.returncode == 0, checkpointed.stderr
    (eight,) = _report(folder, "ckpt")["candidates"]
    assert eight["fits"] and eight["peak_bytes"] < 24 * 1024 ** 3


def test_nothing_fits_under_5_gb(folder: Path) -> None:
    # The 1B in bf16 needs ~2.3 GiB of weights and ~3 GiB of activations at 2048 tokens.
    result = run_ftp("models", "compare", "big.toml", "--candidate", "llama-1b",
                     "--candidate", "llama-8b", "--memory-budget", "5", "-o", "small-gpu",
                     cwd=folder)
    assert result.returncode == 0, result.stderr
    assert "recommended: none — nothing fits the memory budget of 5.00 GiB" in result.stdout
    assert _report(folder, "small-gpu")["recommended"] is None


@pytest.fixture(scope="module")
def classify_pilot(folder: Path) -> dict:
    """A tiny sentiment classifier pipeline with a before-training accuracy, its two
    candidates compared once with ``--pilot 3``: the report and the terminal output."""
    lines = ["text,label"] + [f"{'good fine great' if i % 2 else 'bad awful poor'} movie {i},"
                              f"{'positive' if i % 2 else 'negative'}" for i in range(24)]
    (folder / "reviews.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_pipeline(folder / "classify.toml", """
        [pipeline]
        name = "sentiment"

        [model]
        path = "tiny-small"

        [data.reviews]
        loader = "csv"
        path = "reviews.csv"
        format = "classification"
        eval_fraction = 0.25

        [[stages]]
        method = "classify"
        data = "reviews"
        batch_size = 4
        max_length = 32

        [[evaluate]]
        evaluator = "classification"
        data = "reviews"
        before = true
        """)
    result = run_ftp("models", "compare", "classify.toml", "--candidate", "tiny-big",
                     "--candidate", "tiny-small", "--pilot", "3", "-o", "cls-pilot",
                     cwd=folder)
    assert result.returncode == 0, result.stderr
    return {"stdout": result.stdout, **_report(folder, "cls-pilot")}


def test_classifiers_are_compared_by_size_and_their_before_evaluations(classify_pilot: dict
                                                                      ) -> None:
    big, small = classify_pilot["candidates"]
    for c in (big, small):
        assert c["heldout_loss"] is None  # the loss evaluator does not score labels
        assert 0 <= c["before"]["classification"]["accuracy"] <= 1
        assert c["stage"]["probe"]["ok"], c["stage"]["probe"]
        assert c["stage"]["shape"]["architecture"] == "LlamaForSequenceClassification"
    assert small["stage"]["shape"]["parameters"] < big["stage"]["shape"]["parameters"]
    assert "accuracy=" in classify_pilot["stdout"]  # the before (and after) column


def test_a_misspelt_candidate_is_one_line(folder: Path) -> None:
    line = one_line_error(run_ftp("models", "compare", "tiny.toml", "--candidate",
                                  "./tiny-smal", cwd=folder))
    assert "candidate './tiny-smal'" in line and "not found" in line


def test_a_classifier_pilot_compares_accuracy_after_training(classify_pilot: dict) -> None:
    report = classify_pilot
    accuracies = [c["after_pilot"]["classification"]["accuracy"]
                  for c in report["candidates"]]
    assert all(0 <= a <= 1 for a in accuracies)
    assert "accuracy after the pilot" in " ".join(report["reasons"])
    best = max(accuracies)
    chosen = next(c for c in report["candidates"] if c["name"] == report["recommended"])
    assert chosen["after_pilot"]["classification"]["accuracy"] >= best * 0.95
    # Within 5% of the best, the smaller model is preferred.
    small = report["candidates"][1]
    if small["after_pilot"]["classification"]["accuracy"] >= best * 0.95:
        assert report["recommended"] == "tiny-small"


def test_qlora_holds_the_8b_base_in_about_4_5_bits_per_weight() -> None:
    """QLoRA cannot be validated without bitsandbytes (GPU only): the estimate itself, on
    Llama-3.1-8B's shape (embeddings and LM head stay in bf16)."""
    from ftp.planning.sizing import Setting, Shape, estimate_memory

    shape = Shape(8_030_261_248, 41_943_040, "LlamaForCausalLM", 32, 4096, 14336, 32, 131072,
                  128256, embedding_parameters=2 * 128256 * 4096)
    setting = Setting(batch=1, sequence=2048, adapter=True, weight_bytes=2,
                      autocast_bf16=True)
    bf16 = estimate_memory(shape, setting)
    nf4 = estimate_memory(shape, Setting(**{**setting.as_dict(), "quantized_4bit": True}))
    linear = 8_030_261_248 - 2 * 128256 * 4096
    assert nf4.weights == pytest.approx(linear * 4.5 / 8 + 2 * 128256 * 4096 * 2
                                        + 41_943_040 * 2, rel=1e-6)
    assert 5 < nf4.weights / 1024 ** 3 < 6 < 14 < bf16.weights / 1024 ** 3
    assert nf4.activations == bf16.activations and nf4.optimizer == bf16.optimizer


def test_words_are_counted_per_character_in_scripts_without_spaces() -> None:
    """tokens/word divides by words: a Chinese sentence is one whitespace word, but as many
    words as characters to a word counter (the quickstart's Chinese rows gave 11.8)."""
    from ftp.planning.rows import count_words

    # 6 Han, 2 latin words, 2 Han + 3 Katakana, 5 Hangul, it + s: 20.
    assert count_words("我是一个助手 hello, world! 東京タワー 안녕하세요 it's") == 20
    # Half-width Katakana one by one; 3.14 is two digit runs; snake_case one word.
    assert count_words("ｶﾀｶﾅ 3.14 snake_case") == 7
    assert count_words("  ,, !") == 0
