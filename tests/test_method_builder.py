"""The public builder of trainer-backed methods: precision decided once, reference optional."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ftp import Shape, TrainContext, TrainerMethod
from ftp.training import Precision, TrainingOptions
from ftp_builtin.methods.preference import DPO, PreferenceMethod, PreferenceOptions

pytestmark = pytest.mark.usefixtures("one_thread")


class ORPO(PreferenceMethod):
    """Odds-ratio preference optimisation: no reference model (TRL's experimental trainer)."""

    name = "orpo-test"
    accepts = frozenset({Shape.PREFERENCE})
    uses_reference = False

    class Config(PreferenceOptions):
        """The preference options, nothing more."""

    def trl_trainer(self) -> tuple[Any, Any]:
        import os

        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        return ORPOConfig, ORPOTrainer

    def prepared(self, ctx: TrainContext, trainer: Any) -> None:
        # This trainer tokenizes into columns of its own (prompt_input_ids, ...).
        ctx.log({"event": "tokenized", "examples": len(trainer.train_dataset)})


def pairs(n: int = 4) -> list[dict[str, Any]]:
    return [{"prompt": [{"role": "user", "content": f"Question {i}?"}],
             "chosen": [{"role": "assistant", "content": "A kind answer."}],
             "rejected": [{"role": "assistant", "content": "No."}]} for i in range(n)]


def context(model: Any, tokenizer: Any, tmp_path: Path, log: list[dict[str, Any]],
            adapter: Any = None) -> TrainContext:
    return TrainContext(stage="s", model=model, tokenizer=tokenizer, provider=None,
                        train=pairs(), eval=None, adapter=adapter,
                        output_dir=tmp_path / "checkpoints", seed=0, log=log.append)


def test_a_reference_free_preference_method_is_a_short_subclass(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    log: list[dict[str, Any]] = []
    method = ORPO(ORPO.Config(bf16=False, batch_size=2, max_steps=1, learning_rate=1e-3))
    # ORPOTrainer takes no ref_model argument: the base passed none.
    trained = method.train(context(model, tokenizer, tmp_path, log))
    # The method's own event; the base also records its lean MLPs (ftp.gated_mlp).
    assert [e for e in log if e.get("event") != "lean_mlps"] == [
        {"event": "tokenized", "examples": 4}]
    assert any(not p.detach().equal(before[n]) for n, p in trained.named_parameters())


def test_a_method_with_a_reference_gets_one(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    method = DPO(DPO.Config(bf16=False, precompute_ref_log_probs=False))
    trainer = method.trainer(context(model, tokenizer, tmp_path, []))
    assert trainer.ref_model is not None and trainer.ref_model is not model
    assert not any(p.requires_grad for p in trainer.ref_model.parameters())


@pytest.mark.parametrize(("bf16", "adapter", "expected"), [
    (True, object(), (True, True)),      # bf16 with an adapter: frozen weights held in bf16
    (True, None, (True, False)),         # no adapter: every weight trains in full precision
    (False, object(), (False, False)),   # no bf16: nothing in bf16
])
def test_precision_is_decided_in_one_place(tiny_model, tmp_path, bf16, adapter, expected):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    ctx = context(model, None, tmp_path, [], adapter=adapter)
    precision = Precision.decide(TrainingOptions(bf16=bf16), ctx)
    assert (precision.bf16, precision.frozen_bf16) == expected
    off = Precision.decide(TrainingOptions(bf16=bf16, frozen_bf16=False), ctx)
    assert not off.frozen_bf16
    # The trainer's arguments follow the same decision.
    args = TrainerMethod(TrainingOptions(bf16=bf16)).arguments(ctx)
    assert args.bf16 is precision.bf16 and args.use_cpu is not precision.on_gpu
