"""The LM head's cross-entropy computed a chunk at a time: same loss and gradients, less kept.

``loss_on_labelled_positions`` takes the chunked path wherever the head is a plain linear
layer (tests/test_labelled_loss.py checks it against the model's own loss on a tiny Llama);
these tests check the chunked function itself against PyTorch's cross-entropy, the choice of
path, and that the vocabulary-wide logits are really not kept for backward.
"""

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
)

from ftp.testing import saved_for_backward_bytes
from ftp_builtin.methods.chunked_loss import linear_cross_entropy_sum, plain_head
from ftp_builtin.methods.common import loss_on_labelled_positions


@pytest.mark.parametrize("with_bias", [False, True])
def test_chunked_sum_equals_cross_entropy_with_every_gradient(with_bias):
    torch.manual_seed(0)
    hidden = torch.randn(37, 16, requires_grad=True)
    weight = torch.randn(300, 16, requires_grad=True)
    bias = torch.randn(300, requires_grad=True) if with_bias else None
    targets = torch.randint(0, 300, (37,))

    # chunk=5: several chunks and a short last one.
    ours = linear_cross_entropy_sum(hidden, weight, bias, targets, chunk=5)
    (ours * 0.5).backward()  # a scale from outside (division by the token count) is honoured
    got = [hidden.grad.clone(), weight.grad.clone()] + ([bias.grad.clone()] if bias is not None
                                                        else [])
    for t in (hidden, weight, bias):
        if t is not None:
            t.grad = None

    reference = F.cross_entropy(F.linear(hidden, weight, bias), targets, reduction="sum")
    (reference * 0.5).backward()
    want = [hidden.grad, weight.grad] + ([bias.grad] if bias is not None else [])

    assert torch.allclose(ours, reference, atol=1e-4)
    for g, w in zip(got, want, strict=True):
        assert torch.allclose(g, w, atol=1e-5)


def test_frozen_head_gets_no_gradient():
    hidden = torch.randn(8, 16, requires_grad=True)
    weight = torch.randn(50, 16)  # frozen, as under LoRA
    linear_cross_entropy_sum(hidden, weight, None, torch.randint(0, 50, (8,)), chunk=3).backward()
    assert weight.grad is None and hidden.grad is not None


def _batch(vocab, tokens=60, labelled_from=20):
    torch.manual_seed(1)
    ids = torch.randint(3, vocab, (1, tokens))
    labels = ids.clone()
    labels[0, :labelled_from] = -100
    return {"input_ids": ids, "labels": labels}


def _llama(vocab=256, hidden=32):
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=hidden,
                                        intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2,
                                        tie_word_embeddings=True))


def test_lora_model_takes_chunked_path_with_same_loss_and_lora_gradients(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear",
                                             init_lora_weights=False))
    head = plain_head(model)
    assert head is not None and head is model.get_base_model().lm_head
    batch = _batch(model.config.vocab_size)
    lora = [p for n, p in model.named_parameters() if p.requires_grad]

    chunked = loss_on_labelled_positions(model, batch)
    chunked.backward()
    got = [p.grad.clone() for p in lora]
    model.zero_grad()
    plain = loss_on_labelled_positions(model, batch, chunked=False)
    plain.backward()

    assert torch.allclose(chunked, plain, atol=1e-5)
    for g, p in zip(got, lora, strict=True):
        assert torch.allclose(g, p.grad, atol=1e-6)
    # The head computes logits again once the loss is done: nothing of the swap is left.
    assert "forward" not in head.__dict__
    assert model(input_ids=batch["input_ids"]).logits.shape[-1] == model.config.vocab_size


def test_full_finetune_trains_the_tied_head_the_same():
    model = _llama()
    batch = _batch(256)
    chunked = loss_on_labelled_positions(model, batch)
    chunked.backward()
    embed_grad = model.model.embed_tokens.weight.grad.clone()  # tied: head + embedding
    model.zero_grad()
    reference = model(**batch).loss
    reference.backward()
    assert torch.allclose(chunked, reference, atol=1e-5)
    assert torch.allclose(embed_grad, model.model.embed_tokens.weight.grad, atol=1e-6)


def test_softcapped_head_keeps_the_models_own_logits():
    config = Gemma2Config(vocab_size=128, hidden_size=16, intermediate_size=32,
                          num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                          head_dim=8, final_logit_softcapping=30.0)
    model = Gemma2ForCausalLM(config)
    assert plain_head(model) is None
    batch = _batch(128)
    assert torch.allclose(loss_on_labelled_positions(model, batch), model(**batch).loss,
                          atol=1e-5)


def test_vocabulary_wide_logits_are_not_kept_for_backward():
    # A large vocabulary beside a tiny model: the logits dominate what a step keeps.
    vocab, labelled = 8192, 300
    model = _llama(vocab=vocab, hidden=16)
    batch = _batch(vocab, tokens=320, labelled_from=20)
    logits_bytes = labelled * vocab * 4

    plain = saved_for_backward_bytes(
        lambda: loss_on_labelled_positions(model, batch, chunked=False))
    chunked = saved_for_backward_bytes(lambda: loss_on_labelled_positions(model, batch))
    assert plain - chunked >= logits_bytes  # at least one whole copy of the logits less


def test_cpt_blocks_loss_equals_models_own_loss_over_every_predicted_token():
    from ftp_builtin.methods.cpt import collate_blocks

    model = _llama()
    torch.manual_seed(2)
    batch = collate_blocks(torch.randint(3, 256, (3, 40)).tolist())
    labelled = int((batch["labels"] != -100).sum())
    assert labelled == 3 * 39  # the count Trainer divides by: every token a block predicts
    ours = loss_on_labelled_positions(model, batch, num_items_in_batch=labelled)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    reference = model(**inputs, labels=batch["input_ids"]).loss  # labels = input_ids, as before
    assert torch.allclose(ours, reference, atol=1e-5)
