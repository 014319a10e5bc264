"""bf16 handling during training: frozen weights held in bf16, restored afterwards."""

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from ftp.training import frozen_weights_in_bf16


def _lora_model(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    return get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))


def test_frozen_weights_are_bf16_only_while_training(tiny_model):
    model = _lora_model(tiny_model)
    base = model.base_model.model.model.layers[0].mlp.up_proj.base_layer.weight
    before = base.detach().clone()
    with frozen_weights_in_bf16(model, enabled=True):
        frozen = [p for p in model.parameters() if not p.requires_grad]
        trainable = [p for p in model.parameters() if p.requires_grad]
        assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
        assert trainable and all(p.dtype == torch.float32 for p in trainable)
    base = model.base_model.model.model.layers[0].mlp.up_proj.base_layer.weight
    assert all(p.dtype == torch.float32 for p in model.parameters())
    # The exact original weights come back, not bf16-rounded ones.
    assert torch.equal(base, before)
    # Tied embeddings stay tied.
    inner = model.base_model.model
    assert inner.lm_head.weight is inner.model.embed_tokens.weight


def test_disabled_leaves_weights_untouched(tiny_model):
    model = _lora_model(tiny_model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with frozen_weights_in_bf16(model, enabled=False):
        assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_weights_restored_when_training_fails(tiny_model):
    model = _lora_model(tiny_model)
    before = model.base_model.model.model.embed_tokens.weight.detach().clone()
    try:
        with frozen_weights_in_bf16(model, enabled=True):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert torch.equal(model.base_model.model.model.embed_tokens.weight, before)
