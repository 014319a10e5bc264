"""Preference tuning: the formats on real rows, the tokens DPO trains on, the `preference`
evaluator, and whole `dpo` / `kto` runs through the CLI on the tiny model."""

import json
import math
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftp import IGNORE_INDEX, Shape, TrainContext
from ftp.cli import cli
from ftp.plugins import load_plugins
from ftp.testing import data_section, evaluate_section, stage_section, tiny_pipeline, write_pipeline
from ftp_builtin.evaluators.preference import Preference as PreferenceEvaluator
from ftp_builtin.evaluators.preference import answer_tokens
from ftp_builtin.formats.preference import KTO as KTOFormat
from ftp_builtin.formats.preference import Preference, ShareGPTPreference
from ftp_builtin.methods.preference import DPO, KTO
from ftp_builtin.tokenize import render

DATA = Path(__file__).parent / "data"
LN2 = math.log(2)


def rows(name: str) -> list[dict]:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def pairs() -> list[dict]:
    return [ShareGPTPreference().convert(r) for r in rows("dpo.json")]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


# --- formats --------------------------------------------------------------------------------


def test_preference_components_are_registered():
    registry = load_plugins().registry
    shapes = {n: registry.get("format", n).cls.produces
              for n in ("sharegpt_preference", "preference", "kto")}
    assert shapes == {"sharegpt_preference": Shape.PREFERENCE, "preference": Shape.PREFERENCE,
                      "kto": Shape.UNPAIRED_PREFERENCE}
    assert registry.get("method", "dpo").cls.accepts == {Shape.PREFERENCE}
    assert Shape.UNPAIRED_PREFERENCE in registry.get("method", "kto").cls.accepts
    assert registry.get("evaluator", "preference").cls.accepts == {Shape.PREFERENCE}


def test_sharegpt_preference_single_turn_row():
    row = rows("dpo.json")[0]
    assert ShareGPTPreference().convert(row) == {
        "prompt": [{"role": "user", "content": row["conversations"][0]["value"]}],
        "chosen": [{"role": "assistant", "content": row["chosen"]["value"]}],
        "rejected": [{"role": "assistant", "content": row["rejected"]["value"]}],
    }


def test_sharegpt_preference_keeps_system_and_earlier_turns_in_the_prompt():
    system_row, multi_turn = pairs()[3], pairs()[4]
    assert [m["role"] for m in system_row["prompt"]] == ["system", "user"]
    assert [m["role"] for m in multi_turn["prompt"]] == ["user", "assistant", "user",
                                                          "assistant", "user"]
    assert multi_turn["prompt"][1]["content"] == rows("dpo.json")[4]["conversations"][1]["value"]


@pytest.mark.parametrize(("change", "reason"), [
    ({"chosen": {"from": "human", "value": "hi"}}, "'chosen' should be one assistant message"),
    ({"rejected": {"from": "gpt", "value": " "}}, "last assistant message is empty"),
    ({"rejected": {"from": "robot", "value": "x"}}, "unknown role 'robot'"),
    ({"chosen": {"from": "gpt", "value": None}}, "should be text"),
    ({"conversations": []}, "the prompt is empty"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
     "the prompt ends with an assistant message"),
])
def test_sharegpt_preference_refuses_bad_rows(change, reason):
    with pytest.raises(ValueError, match=reason):
        ShareGPTPreference().convert({**rows("dpo.json")[0], **change})


def test_sharegpt_preference_missing_answer_names_the_field():
    row = {k: v for k, v in rows("dpo.json")[0].items() if k != "rejected"}
    with pytest.raises(ValueError, match="missing field 'rejected'"):
        ShareGPTPreference().convert(row)


def test_preference_columns_of_text_become_messages():
    fmt = Preference(Preference.Config(prompt="question", chosen="good", rejected="bad",
                                       system_prompt="Be brief."))
    assert fmt.convert({"question": "2+2?", "good": "4", "bad": "5"}) == {
        "prompt": [{"role": "system", "content": "Be brief."},
                   {"role": "user", "content": "2+2?"}],
        "chosen": [{"role": "assistant", "content": "4"}],
        "rejected": [{"role": "assistant", "content": "5"}],
    }


def test_preference_columns_of_messages_and_the_implicit_prompt():
    q = {"role": "user", "content": "2+2?"}
    good, bad = {"role": "assistant", "content": "4"}, {"role": "assistant", "content": "5"}
    explicit = Preference().convert({"prompt": [q], "chosen": [good], "rejected": [bad]})
    implicit = Preference().convert({"chosen": [q, good], "rejected": [q, bad]})
    assert explicit == implicit == {"prompt": [q], "chosen": [good], "rejected": [bad]}
    with pytest.raises(ValueError, match="should be text or a list of messages"):
        Preference().convert({"prompt": "q", "chosen": 4, "rejected": "5"})
    with pytest.raises(ValueError, match="the prompt is empty"):
        Preference().convert({"chosen": [good], "rejected": [bad]})


def test_kto_splits_off_the_last_answer_and_keeps_the_label():
    data = rows("kto.json")
    converted = [KTOFormat().convert(r) for r in data]
    assert [c["label"] for c in converted] == [r["label"] for r in data]
    first = converted[0]
    assert first["prompt"] == [data[0]["messages"][0]]
    assert first["completion"] == [data[0]["messages"][1]]
    multi = converted[4]
    assert multi["prompt"] + multi["completion"] == data[4]["messages"]
    assert [m["role"] for m in multi["completion"]] == ["assistant"]


@pytest.mark.parametrize(("label", "parsed"), [("true", True), ("False", False), (" TRUE ", True)])
def test_kto_accepts_true_and_false_as_text(label, parsed):
    assert KTOFormat().convert({**rows("kto.json")[0], "label": label})["label"] is parsed


@pytest.mark.parametrize("label", ["yes", 1, 0, None, "", [True]])
def test_kto_refuses_any_other_label(label):
    with pytest.raises(ValueError, match="label should be true or false"):
        KTOFormat().convert({**rows("kto.json")[0], "label": label})


def test_kto_refuses_a_conversation_that_does_not_end_with_an_answer():
    row = rows("kto.json")[0]
    with pytest.raises(ValueError, match="does not end with an assistant message"):
        KTOFormat().convert({**row, "messages": row["messages"][:1]})


# --- the tokens DPO and KTO train on --------------------------------------------------------


def train_context(model, tokenizer, records, tmp_path, adapter=None) -> TrainContext:
    return TrainContext(stage="dpo", model=model, tokenizer=tokenizer, provider=None,
                        train=records, eval=None, adapter=adapter,
                        output_dir=tmp_path / "checkpoints", seed=0)


@pytest.mark.slow
def test_dpo_trains_on_the_chat_template_tokens_of_smollm2(smollm2_tokenizer, tiny_model,
                                                           tmp_path):
    """What TRL tokenizes for DPO is SmolLM2's own rendering of prompt + answer.

    The answer's tokens are where the rendering of the prompt with its generation prompt
    ends; they run through the end-of-turn token and the template's newline after it. The
    `preference` evaluator scores the same tokens but the newline (ftp's SFT masks).
    """
    from transformers import AutoModelForCausalLM

    tok = smollm2_tokenizer
    records = pairs()
    model = AutoModelForCausalLM.from_pretrained(tiny_model)  # only tokenization runs here
    method = DPO(DPO.Config(bf16=False, max_length=4096, precompute_ref_log_probs=False))
    dataset = method.trainer(train_context(model, tok, records, tmp_path)).train_dataset
    assert len(dataset) == len(records)
    end_of_turn = tok.convert_tokens_to_ids("<|im_end|>")
    newline = tok.encode("\n", add_special_tokens=False)
    for record, row in zip(records, dataset, strict=True):
        prompt = row["prompt_ids"]
        assert prompt == render(tok, record["prompt"], generation_prompt=True)
        for answer in ("chosen", "rejected"):
            ids = row[f"{answer}_ids"]
            assert prompt + ids == render(tok, record["prompt"] + record[answer])
            assert tok.decode(ids) == record[answer][0]["content"] + "<|im_end|>\n"
            scored = answer_tokens(tok, record["prompt"], record[answer])
            labelled = [t for t in scored["labels"] if t != IGNORE_INDEX]
            assert labelled[-1] == end_of_turn and labelled + newline == ids
            assert scored["input_ids"] == prompt + ids

    # The collated batch: chosen rows then rejected rows; loss only on the last answer, even
    # when the prompt holds earlier assistant turns (the multi-turn row 4).
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    batch = DataCollatorForPreference(pad_token_id=tok.pad_token_id)([dataset[4]])
    chosen_ids = batch["input_ids"][0][batch["completion_mask"][0].bool()].tolist()
    assert chosen_ids == dataset[4]["chosen_ids"]


@pytest.mark.slow
def test_kto_trains_on_the_chat_template_tokens_of_smollm2(smollm2_tokenizer, tiny_model,
                                                           tmp_path):
    from transformers import AutoModelForCausalLM

    tok = smollm2_tokenizer
    records = [KTOFormat().convert(r) for r in rows("kto.json")]
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    method = KTO(KTO.Config(bf16=False, batch_size=2, max_length=4096,
                            precompute_ref_log_probs=False))
    dataset = method.trainer(train_context(model, tok, records, tmp_path)).train_dataset
    assert len(dataset) == len(records)
    for record, row in zip(records, dataset, strict=True):
        assert row["prompt_ids"] == render(tok, record["prompt"], generation_prompt=True)
        assert row["prompt_ids"] + row["completion_ids"] == render(
            tok, record["prompt"] + record["completion"])
        assert row["label"] == record["label"]


def test_lean_lm_head_gives_what_trls_fused_head_gives(tiny_model):
    """On CPU ftp swaps TRL's fused LM head for one that scores answer positions only."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from ftp_builtin.methods.lm_head import use_lean_lm_head

    torch.manual_seed(0)
    vocab = AutoModelForCausalLM.from_pretrained(tiny_model).config.vocab_size
    ids = torch.randint(3, vocab, (3, 24))
    mask = torch.ones_like(ids)
    mask[1, 18:] = 0  # right padding
    labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
    labels[0, :9] = labels[1, :5] = labels[2, :20] = IGNORE_INDEX  # the prompts

    outputs, grads = [], []
    for lean in (False, True):
        model = AutoModelForCausalLM.from_pretrained(tiny_model)
        add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
        if lean:
            assert use_lean_lm_head(model)
        out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
        out.log_probs.sum().backward()
        outputs.append(out)
        grads.append(copy.deepcopy(model.model.layers[0].mlp.up_proj.weight.grad))
        plain = model(input_ids=ids[:1]).logits  # without the flag: the model's own forward
        assert plain.shape == (1, 24, model.config.vocab_size)
    trl, lean = outputs
    for field in ("log_probs", "entropy", "mean_logits"):
        assert torch.allclose(getattr(lean, field), getattr(trl, field), atol=1e-5), field
    assert torch.equal(lean.is_top1, trl.is_top1)
    assert torch.allclose(lean.loss, trl.loss, atol=1e-6)
    assert (lean.log_probs[labels[:, 1:] == IGNORE_INDEX] == 0).all()
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


# --- the preference evaluator ---------------------------------------------------------------


def evaluate(model, tok, data, **options) -> dict:
    from ftp import EvalContext

    evaluator = PreferenceEvaluator(PreferenceEvaluator.Config(**options))
    return evaluator.evaluate(EvalContext(stage="base", model=model, tokenizer=tok, data=data))


def swapped(data: list[dict]) -> list[dict]:
    return [{**p, "chosen": p["rejected"], "rejected": p["chosen"]} for p in data]


@pytest.fixture(scope="module")
def tiny(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(
        tiny_model)


def test_preference_evaluator_flips_when_answers_are_swapped(tiny):
    model, tok = tiny
    result = evaluate(model, tok, pairs())
    m = result["metrics"]
    assert m["pairs"] == 5 and m["skipped"] == 0
    assert 0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["accuracy_per_token"] <= 1.0
    flipped = evaluate(model, tok, swapped(pairs()))["metrics"]
    assert flipped["accuracy"] == pytest.approx(1 - m["accuracy"])
    assert flipped["mean_margin"] == pytest.approx(-m["mean_margin"], abs=1e-3)
    assert flipped["chosen_logp"] == pytest.approx(m["rejected_logp"], abs=1e-3)
    assert [s["margin"] > 0 for s in result["samples"]].count(True) == m["accuracy"] * 5


def test_preference_evaluator_logps_are_each_sequence_alone(tiny):
    """Batching, padding and scoring only the kept positions change nothing."""
    import torch

    model, tok = tiny
    data = pairs()
    samples = evaluate(model, tok, data, batch_size=3)["samples"]
    for pair, sample in zip(data, samples, strict=True):
        for answer in ("chosen", "rejected"):
            row = answer_tokens(tok, pair["prompt"], pair[answer])
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([row["input_ids"]])).logits[0, :-1]
            targets = torch.tensor(row["labels"][1:])
            keep = targets != IGNORE_INDEX
            logp = torch.log_softmax(logits[keep].float(), -1).gather(
                -1, targets[keep].unsqueeze(-1)).sum().item()
            assert sample[f"{answer}_logp"] == pytest.approx(logp, abs=1e-3)
            assert sample[f"{answer}_tokens"] == int(keep.sum())


def test_preference_evaluator_keep_start_skips_pairs_whose_prompt_fills_max_length(tiny):
    model, tok = tiny
    short = len(answer_tokens(tok, pairs()[0]["prompt"], pairs()[0]["chosen"])["input_ids"])
    m = evaluate(model, tok, pairs(), max_length=short, truncation_mode="keep_start")["metrics"]
    assert m["pairs"] + m["skipped"] == 5 and m["skipped"] > 0 and m["truncated"] > 0
    # keep_end (the default) cuts those prompts from the start instead: every pair is scored.
    m = evaluate(model, tok, pairs(), max_length=short)["metrics"]
    assert m["pairs"] == 5 and m["skipped"] == 0 and m["truncated"] > 0


# --- whole runs through the CLI -------------------------------------------------------------


def run(pipeline: Path, out: Path, *extra: str) -> Path:
    env = dict(os.environ)
    try:
        result = CliRunner().invoke(cli, ["run", str(pipeline), "--output-dir", str(out),
                                          *extra])
    finally:  # `ftp run` quiets libraries through the environment; keep that to the run
        os.environ.clear()
        os.environ.update(env)
    assert result.exit_code == 0, result.output
    return out


def dpo_pipeline(folder: Path, model: Path, stage_extra: str = "",
                 before_stages: str = "") -> Path:
    return tiny_pipeline(
        folder / "pipeline.toml", model,
        data_section("pairs", loader="json", path=DATA / "dpo.json",
                     format="sharegpt_preference", eval_fraction=0.4),
        data_section("identity", loader="json", path=DATA / "alpaca.json", format="alpaca",
                     placeholders={"name": "Nova", "author": "Northwind Labs"}),
        before_stages,
        stage_section("dpo", "pairs", extra=stage_extra),
        evaluate_section("preference", data="pairs", before=True), name="dpo-test")


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def steps(out: Path, stage: str) -> list[dict]:
    return [m for m in metrics(out) if m.get("stage") == stage and "loss" in m]


REWARDS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins")


def test_dpo_lora_run_logs_rewards_and_evaluates_before_and_after(tiny_model, tmp_path):
    out = run(dpo_pipeline(tmp_path, tiny_model, "adapter = { r = 4 }"), tmp_path / "run")
    logged = steps(out, "dpo")
    assert len(logged) == 2
    for record in logged:
        assert all(isinstance(record[k], float) for k in REWARDS)
    # The reference is the base with the adapter disabled: at the first step, before any
    # update, the policy is the reference, so every reward is 0 and the loss is ln 2.
    assert logged[0]["loss"] == pytest.approx(LN2, abs=1e-6)
    assert logged[0]["rewards/margins"] == 0.0
    tokenized = next(m for m in metrics(out) if m.get("event") == "tokenized")
    assert tokenized["examples"] == 3 and tokenized["dropped"] == 0

    results = json.loads((out / "results.json").read_text())["stages"]
    before, after = results["base"]["preference"], results["dpo"]["preference"]
    assert before["metrics"]["pairs"] == after["metrics"]["pairs"] == 2
    assert before["metrics"]["mean_margin"] != after["metrics"]["mean_margin"]
    assert [s["pair"] for s in before["samples"]] == [s["pair"] for s in after["samples"]]
    # Relative to the reference (the model before training, scored by the same evaluation):
    # each pair's reward margin is the change of its chosen-minus-rejected log-prob margin.
    assert "reward_accuracy" not in before["metrics"]
    changes = [a["margin"] - b["margin"] for a, b in zip(after["samples"], before["samples"],
                                                          strict=True)]
    assert after["metrics"]["reference"] == "base"
    assert after["metrics"]["mean_reward_margin"] == pytest.approx(sum(changes) / 2)
    assert after["metrics"]["reward_accuracy"] == sum(c > 0 for c in changes) / 2

    # Only the trained adapter is saved (no copy of it as TRL's reference adapter).
    adapter = out / "adapter"
    assert (adapter / "adapter_config.json").is_file() and not (adapter / "ref").exists()
    config = json.loads((out / "model" / "config.json").read_text())
    assert not [k for k in config if "peft" in k.lower() or "adapter" in k.lower()]


@pytest.mark.parametrize("precompute", ["", "precompute_ref_log_probs = false"])
def test_dpo_after_sft_uses_the_sft_model_as_reference(tiny_model, tmp_path, precompute):
    """Full finetuning in a chain: the reference is the model this stage starts from.

    Without an adapter the reference log-probabilities are precomputed from that model, or
    (``precompute_ref_log_probs = false``) computed by a copy of it. TRL's own fallback would
    reload the weights named in the model's config, here the untrained tiny model, and the
    first DPO step would not start at ln 2. (In fp32: under bf16 autocast, the precomputed
    batches are padded differently from the training batches, which moves the first loss by
    about 1e-3.)
    """
    sft = """
        [[stages]]
        method = "sft"
        data = "identity"
        max_steps = 3
        learning_rate = 1e-2
        batch_size = 5
    """
    extra = f"bf16 = false\n{precompute}"
    out = run(dpo_pipeline(tmp_path, tiny_model, extra, sft), tmp_path / "run")
    first = steps(out, "dpo")[0]
    assert first["loss"] == pytest.approx(LN2, abs=1e-6)
    assert first["rewards/chosen"] == first["rewards/rejected"] == 0.0
    second = steps(out, "dpo")[1]
    assert second["rewards/margins"] != 0.0


def test_kto_lora_run_logs_rewards(tiny_model, tmp_path):
    pipeline = write_pipeline(tmp_path / "kto.toml", f"""
        [pipeline]
        name = "kto-test"
        seed = 7

        [model]
        path = {json.dumps(str(tiny_model))}

        [data.answers]
        loader = "json"
        path = {json.dumps(str(DATA / "kto.json"))}
        format = "kto"

        [[stages]]
        method = "kto"
        data = "answers"
        adapter = {{ r = 4 }}
        max_steps = 2
        batch_size = 2
        logging_steps = 1
        learning_rate = 1e-3
        max_length = 4096
    """)
    out = run(pipeline, tmp_path / "run")
    logged = steps(out, "kto")
    assert len(logged) == 2
    assert all(any(k in r for k in ("rewards/chosen", "rewards/rejected")) for r in logged)
    assert all("kl" in r for r in logged)
    assert logged[0]["loss"] == pytest.approx(0.5, abs=1e-6)  # policy == reference: σ(0)
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    assert (out / "model" / "config.json").is_file()


# --- validation -----------------------------------------------------------------------------


def test_dpo_on_an_alpaca_dataset_is_refused_at_validation(tiny_model, tmp_path):
    pipeline = dpo_pipeline(tmp_path, tiny_model)
    text = pipeline.read_text().replace('method = "dpo"\ndata = "pairs"',
                                        'method = "dpo"\ndata = "identity"')
    pipeline.write_text(text)
    result = CliRunner().invoke(cli, ["validate", str(pipeline)])
    assert result.exit_code == 2, result.output
    line = next(x for x in result.output.splitlines() if "stages[0].data" in x)
    assert "'dpo' trains on preference data" in line and "'identity'" in line
    assert "alpaca" in line and "conversational" in line


@pytest.mark.parametrize(("option", "message"), [
    ('loss_type = "exo_pair"', "needs label_smoothing > 0"),
    ('loss_type = "sigmod"', "stages[0].loss_type"),
    ("beta = 0", "stages[0].beta"),
])
def test_dpo_options_are_checked_at_validation(tiny_model, tmp_path, option, message):
    pipeline = dpo_pipeline(tmp_path, tiny_model, option)
    result = CliRunner().invoke(cli, ["validate", str(pipeline)])
    assert result.exit_code == 2 and message in result.output, result.output
