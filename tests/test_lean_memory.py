"""Bounded memory: evaluations score in budgeted passes; a finished trainer is let go."""

from __future__ import annotations

import json
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from ftp import IGNORE_INDEX, EvalContext, hookimpl
from ftp.memory import can_trim, model_on_gpu, release, trim
from ftp.testing import run_pipeline
from ftp_builtin.evaluators.scoring import groups, score_rows
from ftp_builtin.evaluators.text import Loss
from ftp_builtin.tokenize import tokenize_records

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = Path(__file__).parent / "data"
PAIRS = [("Who are you?", "I am Nova, an AI assistant."), ("Hello there", "Hello!"),
         ("What is your name? Tell me slowly, please.", "My name is Nova."),
         ("abc", "The quick brown fox jumps over the lazy dog. " * 3),
         ("Say hi", "hi")]


def records() -> list[dict[str, Any]]:
    return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in PAIRS]


def whole_batch_loss(model: Any, rows: list[dict[str, list[int]]], pad: int) -> tuple[float, int]:
    """The loss as the evaluator computed it before: one padded batch, every position's logits."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        mask[i, :n] = 1
    with torch.no_grad():
        logits = model.eval()(input_ids=ids, attention_mask=mask).logits
    total = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)),
                            labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX,
                            reduction="sum")
    return float(total), int((labels[:, 1:] != IGNORE_INDEX).sum())


@pytest.fixture(scope="module")
def loaded(tiny_model: Path) -> tuple[Any, Any, list[dict[str, list[int]]]]:
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    rows = tokenize_records(tok, records(), 512, True).rows
    return tok, model, rows


@pytest.mark.parametrize("budget", [1, 10**9])
def test_budgeted_scores_equal_the_whole_batch_loss(loaded: Any, budget: int) -> None:
    tok, model, rows = loaded
    reference, count = whole_batch_loss(model, rows, tok.pad_token_id)
    model.train()
    scored = score_rows(model, rows, tok.pad_token_id, max_rows=8, budget=budget)
    assert all(s is not None for s in scored)
    assert sum(s.tokens for s in scored if s) == count
    assert -sum(s.logp for s in scored if s) == pytest.approx(reference, abs=1e-3)
    assert model.training  # put back as it was


def test_groups_keep_each_pass_within_the_budget_and_row_limit() -> None:
    rows = [{"input_ids": [1] * n, "labels": [IGNORE_INDEX] * (n // 2) + [1] * (n - n // 2)}
            for n in (5, 40, 12, 33, 8, 21, 3, 60)]
    rows.append({"input_ids": [1, 2, 3], "labels": [IGNORE_INDEX] * 3})  # nothing to score
    vocab, budget = 100, 4 * 100 * 60  # one pass: at most 60 kept positions in all
    got = groups(rows, vocab, max_rows=3, budget=budget)
    assert sorted(j for g in got for j in g) == list(range(8))
    for g in got:
        width = max(len(rows[j]["input_ids"]) for j in g)
        first = min(rows[j]["labels"].index(1) - 1 for j in g)
        assert len(g) <= 3
        assert len(g) == 1 or len(g) * (width - first) * vocab * 4 <= budget
    assert len(groups(rows, vocab, max_rows=100)) == 1  # a generous budget: one pass


def test_the_loss_evaluator_scores_as_before(loaded: Any) -> None:
    tok, model, rows = loaded
    reference, count = whole_batch_loss(model, rows, tok.pad_token_id)
    result = Loss(Loss.Config(batch_size=2)).evaluate(
        EvalContext(stage="base", model=model, tokenizer=tok, data=records()))
    m = result["metrics"]
    assert m["tokens"] == count and m["examples"] == len(PAIRS)
    assert m["loss"] == pytest.approx(reference / count, abs=1e-3)


def test_release_gives_the_heap_back_on_linux() -> None:
    import sys

    assert can_trim() == sys.platform.startswith("linux")
    blocks = [bytearray(64 * 1024) for _ in range(2000)]  # ~128 MB in small heap blocks
    del blocks
    release()
    assert isinstance(trim(), bool)
    assert not model_on_gpu(torch.nn.Linear(2, 2)) and not model_on_gpu(object())


OPTIMIZERS: list[weakref.ref[Any]] = []
ALIVE_AFTER_TRAINING: list[bool] = []


class Watcher:
    """Notes the stage's optimizer as training begins; after training, whether it lives on."""

    @staticmethod
    @hookimpl
    def ftp_trainer_callbacks(stage: str) -> list[Any]:
        from transformers import TrainerCallback

        class Note(TrainerCallback):
            def on_train_begin(self, args: Any, state: Any, control: Any,
                               optimizer: Any = None, **kw: Any) -> None:
                OPTIMIZERS.append(weakref.ref(optimizer))

        return [Note()]

    @staticmethod
    @hookimpl
    def ftp_model_loaded(model: Any, tokenizer: Any, stage: str) -> None:
        if stage != "base":
            ALIVE_AFTER_TRAINING.append(OPTIMIZERS[-1]() is not None)


def test_the_trainer_is_let_go_before_saving_and_evaluating(tiny_model: Path,
                                                            tmp_path: Path) -> None:
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records() * 4), encoding="utf-8")
    run = run_pipeline(f"""
        [pipeline]
        name = "lean"

        [model]
        path = {json.dumps(str(tiny_model))}

        [data.chat]
        loader = "json"
        path = {json.dumps(str(data))}
        format = "messages"
        eval_fraction = 0.2

        [[stages]]
        method = "sft"
        data = "chat"
        adapter = {{ type = "lora", r = 4 }}
        max_steps = 2
        batch_size = 4
        trim_memory_steps = 1

        [[evaluate]]
        evaluator = "loss"
        data = "chat"
    """, tmp_path / "run", plugins=[Watcher])
    assert run.metrics("sft", "loss")["tokens"] > 0
    assert OPTIMIZERS and ALIVE_AFTER_TRAINING == [False]
