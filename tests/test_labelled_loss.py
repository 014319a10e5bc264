"""The SFT loss computed only at labelled positions equals the model's own loss."""

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from ftp_builtin.methods.common import loss_on_labelled_positions
from ftp_builtin.tokenize import conversation


def _batch(tiny_model, padding_free):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    rows = [
        conversation(tok, [{"role": "user", "content": q}, {"role": "assistant", "content": a}])
        for q, a in [("Who are you?", "I am Nova."), ("Hello there", "Hello! How are you today?"),
                     ("What is your name?", "My name is Nova, an AI assistant.")]
    ]
    collate = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id,
                                              padding_free=padding_free)
    return collate(rows)


def test_padding_free_loss_and_gradients_match_model_loss(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    batch = _batch(tiny_model, padding_free=True)
    assert batch["input_ids"].shape[0] == 1

    ours = loss_on_labelled_positions(model, batch)
    ours.backward()
    ours_grad = model.model.layers[0].mlp.up_proj.weight.grad.clone()
    model.zero_grad()

    reference = model(**batch).loss
    reference.backward()
    ref_grad = model.model.layers[0].mlp.up_proj.weight.grad

    assert torch.allclose(ours, reference, atol=1e-5)
    assert torch.allclose(ours_grad, ref_grad, atol=1e-6)


def test_padded_batch_loss_matches_model_loss(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    batch = _batch(tiny_model, padding_free=False)
    assert batch["input_ids"].shape[0] == 3
    ours = loss_on_labelled_positions(model, batch)
    assert torch.allclose(ours, model(**batch).loss, atol=1e-5)


def test_normalised_by_tokens_of_whole_accumulated_batch(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    batch = _batch(tiny_model, padding_free=True)
    labelled = int((batch["labels"] != -100).sum())
    per_token = loss_on_labelled_positions(model, batch)
    summed_over_twice = loss_on_labelled_positions(model, batch, num_items_in_batch=2 * labelled)
    assert torch.allclose(summed_over_twice * 2, per_token, atol=1e-6)
