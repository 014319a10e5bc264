"""The preference trainers' LM head a chunk of positions at a time: same loss, gradients, logs.

On CPU ftp swaps TRL's fused head of DPOTrainer/KTOTrainer for its lean one
(``ftp_builtin.methods.lm_head``); where the head is a plain linear layer, that one now applies
the head through ``chunked_loss.linear_log_probs``. ORPO/SimPO (TRL's experimental trainers)
override ``concatenated_forward`` the same way (``ftp_builtin.methods.reference_free``). Each
test runs one step of a real TRL trainer on a tiny Llama both ways, with chunks of 3 positions,
and compares the loss, every trainable parameter's gradient and the metrics TRL logs.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from ftp import IGNORE_INDEX
from ftp.testing import saved_for_backward_bytes
from ftp_builtin.methods import chunked_loss
from ftp_builtin.methods.chunked_loss import plain_head
from ftp_builtin.methods.lm_head import use_lean_lm_head

pytestmark = pytest.mark.usefixtures("one_thread")

QUESTIONS = ["Who are you?", "What is your name?", "Say hello.", "How are you today?"]
GOOD = ["I am Nova, an AI assistant.", "My name is Nova.", "Hello world!", "Fine, thank you."]
BAD = ["The quick brown fox.", "abc", "Instruction, input and output.", "No."]


def pairs() -> Dataset:
    return Dataset.from_list([
        {"prompt": [{"role": "user", "content": q}],
         "chosen": [{"role": "assistant", "content": g}],
         "rejected": [{"role": "assistant", "content": b}]}
        for q, g, b in zip(QUESTIONS, GOOD, BAD, strict=True)])


def unpaired() -> Dataset:
    return Dataset.from_list([
        {"prompt": [{"role": "user", "content": q}],
         "completion": [{"role": "assistant", "content": g if i % 2 else b}], "label": bool(i % 2)}
        for i, (q, g, b) in enumerate(zip(QUESTIONS, GOOD, BAD, strict=True))])


def _model(folder: Any, lora: bool) -> Any:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder)
    if lora:
        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear",
                                                 init_lora_weights=False))
    return model


def _perturbed(model: Any) -> Any:
    """The reference (a copy), and the model moved a little away from it."""
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return ref


def one_step(folder: Any, tmp_path: Any, method: str, lora: bool, chunked: bool
             ) -> tuple[float, dict[str, torch.Tensor], dict[str, float], int, int]:
    """One step of TRL's trainer for `method`.

    Returns the loss, the trainable gradients, the logged metrics, the bytes kept for
    backward and the bytes of the logits of every position of the batch.
    """
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = _model(folder, lora)
    common = {"output_dir": str(tmp_path / f"{method}-{chunked}"), "report_to": [],
              "per_device_train_batch_size": 4, "max_length": 64, "use_cpu": True}
    extra: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method in ("dpo", "kto"):
            from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

            config_cls, trainer_cls = ((DPOConfig, DPOTrainer) if method == "dpo"
                                       else (KTOConfig, KTOTrainer))
            if not lora:
                extra["ref_model"] = _perturbed(model)
            args = config_cls(**common, precompute_ref_log_probs=False)
            data = pairs() if method == "dpo" else unpaired()
        else:
            from trl.experimental.cpo import CPOConfig, CPOTrainer
            from trl.experimental.orpo import ORPOConfig, ORPOTrainer

            from ftp_builtin.methods.chunked_pairs import chunked_pair_forward

            if method == "orpo":
                args, base = ORPOConfig(**common), ORPOTrainer
            else:  # ftp's simpo: pure (sft_weight 0) or with the chosen answers' NLL
                alpha = 0.5 if method == "simpo+nll" else 0.0
                args, base = CPOConfig(**common, loss_type="simpo", cpo_alpha=alpha), CPOTrainer
            trainer_cls = chunked_pair_forward(base) if chunked else base
            data = pairs()
        trainer = trainer_cls(model=model, args=args, train_dataset=data,
                              processing_class=tokenizer, **extra)
    if method in ("dpo", "kto") and chunked:
        assert use_lean_lm_head(trainer.model)
        # A separate reference is wrapped by accelerate once prepared, and keeps TRL's own
        # fused head (its tiles bounded, nothing kept without gradient), as in ftp.
        if getattr(trainer, "ref_model", None) is not None:
            use_lean_lm_head(trainer.ref_model)
    if chunked:
        assert plain_head(trainer.model) is trainer.model.get_output_embeddings()
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    losses = []
    kept = saved_for_backward_bytes(
        lambda: losses.append(trainer.compute_loss(trainer.model, batch)))
    loss = losses[0]
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None for g in grads.values())
    metrics = getattr(trainer, "_metrics", None) or getattr(trainer, "_stored_metrics", {})
    logged = {k: float(torch.tensor(v).float().mean()) for k, v in metrics["train"].items()}
    ids = batch.get("input_ids", batch.get("chosen_input_ids"))
    logits = 2 * ids.numel() * model.config.vocab_size * 4  # chosen and rejected rows
    return float(loss.detach()), grads, logged, kept, logits


@pytest.mark.parametrize("method", ["dpo", "kto", "orpo", "simpo", "simpo+nll"])
@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_chunked_head_gives_trls_loss_gradients_and_logs(tiny_model, tmp_path, monkeypatch,
                                                         method, lora):
    trl = one_step(tiny_model, tmp_path, method, lora, chunked=False)
    monkeypatch.setattr(chunked_loss, "CHUNK", 3)  # several chunks, a short last one
    ours = one_step(tiny_model, tmp_path, method, lora, chunked=True)
    assert ours[0] == pytest.approx(trl[0], abs=1e-5)
    assert ours[1].keys() == trl[1].keys()
    for name, grad in trl[1].items():
        assert torch.allclose(ours[1][name], grad, atol=1e-5), name
    assert ours[2].keys() == trl[2].keys()
    for key, value in trl[2].items():
        assert ours[2][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    if method in ("orpo", "simpo", "simpo+nll"):
        # TRL's own forward keeps logits of every position; ours none (DPO/KTO: see below).
        assert trl[3] - ours[3] >= trl[4] / 2


def test_answer_logits_are_not_kept_for_backward(monkeypatch):
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    # A large vocabulary beside a tiny model: the logits dominate what a step keeps.
    vocab = 8192
    torch.manual_seed(0)
    ids = torch.randint(3, vocab, (4, 80))
    labels = ids.clone()
    labels[:, :20] = IGNORE_INDEX
    answer_logits = int((labels[:, 1:] != IGNORE_INDEX).sum()) * vocab * 4

    def saved(chunked: bool) -> int:
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=16,
                                             intermediate_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, num_key_value_heads=1))
        add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
        assert use_lean_lm_head(model)
        if not chunked:
            monkeypatch.setattr("ftp_builtin.methods.lm_head.plain_head", lambda m: None)
        return saved_for_backward_bytes(
            lambda: model(input_ids=ids, labels=labels, fused_lm_head=True))

    kept = saved(True)
    assert kept < answer_logits / 4  # hidden states and log Z, not the logits
    assert saved(False) - kept >= answer_logits  # the unchunked path keeps them whole
