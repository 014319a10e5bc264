"""Gated SiLU MLPs keep two tensors for backward instead of three, with the same gradients."""

import copy
import json
import math
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    GemmaConfig,
    GemmaForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
)

from ftp.gated_mlp import is_plain_gated_silu, lean_gated_mlps
from ftp.testing import (
    data_section,
    run_cli,
    saved_for_backward_bytes,
    stage_section,
    tiny_pipeline,
)

DATA = Path(__file__).parent / "data"


def _llama(seed=0):
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=96,
                                        num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2))


def _grads(model, ids):
    model.zero_grad()
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                               if p.grad is not None}


def test_same_loss_and_gradients_for_every_trained_weight():
    model = _llama()
    model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear",
                                             init_lora_weights=False))
    ids = torch.randint(0, 128, (2, 24))
    loss, grads = _grads(model, ids)
    with lean_gated_mlps(model) as swapped:
        assert swapped == 2  # one MLP per layer
        lean_loss, lean_grads = _grads(model, ids)
    assert torch.allclose(loss, lean_loss, atol=1e-6)
    assert grads.keys() == lean_grads.keys() and grads
    for name, g in grads.items():
        assert torch.allclose(g, lean_grads[name], atol=1e-6), name


def test_one_intermediate_tensor_a_layer_less_is_kept():
    model = _llama()
    for p in model.parameters():
        p.requires_grad_(False)  # frozen, as under an adapter: weights are not what is kept
    model.model.embed_tokens.weight.requires_grad_(True)  # something must want a gradient
    ids = torch.randint(0, 128, (1, 50))
    plain = saved_for_backward_bytes(lambda: model(input_ids=ids))
    with lean_gated_mlps(model):
        lean = saved_for_backward_bytes(lambda: model(input_ids=ids))
    one_intermediate = 50 * 96 * 4  # tokens x intermediate width x float32
    assert plain - lean >= 2 * one_intermediate  # two layers


def test_class_forward_comes_back_and_a_deep_copy_uses_its_own_weights():
    model = _llama()
    with lean_gated_mlps(model):
        twin = copy.deepcopy(model)  # a reference model copied while training
    mlp = model.model.layers[0].mlp
    assert "forward" not in mlp.__dict__
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(0.5)
        ids = torch.randint(0, 128, (1, 8))
        assert not torch.allclose(model(input_ids=ids).logits, twin(input_ids=ids).logits)
        twin_mlp = twin.model.layers[0].mlp
        x = torch.randn(1, 3, 32)
        expected = twin_mlp.down_proj(torch.nn.functional.silu(twin_mlp.gate_proj(x))
                                      * twin_mlp.up_proj(x))
        assert torch.allclose(twin_mlp(x), expected, atol=1e-6)


def test_other_mlps_are_left_alone():
    gelu = GemmaForCausalLM(GemmaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=1, num_attention_heads=2,
                                        num_key_value_heads=1, head_dim=8))
    fused = Phi3ForCausalLM(Phi3Config(vocab_size=64, hidden_size=16, intermediate_size=32,
                                       num_hidden_layers=1, num_attention_heads=2,
                                       num_key_value_heads=1, pad_token_id=0))
    assert not any(is_plain_gated_silu(m) for m in gelu.modules())
    assert not any(is_plain_gated_silu(m) for m in fused.modules())
    with lean_gated_mlps(gelu) as swapped:
        assert swapped == 0


def test_a_real_run_trains_with_the_lean_mlps_and_puts_the_class_forward_back(tiny_model,
                                                                               tmp_path):
    pipeline = tiny_pipeline(
        tmp_path / "pipeline.toml", tiny_model,
        data_section("identity", loader="json", path=DATA / "alpaca.json", format="alpaca"),
        stage_section("sft", "identity", max_steps=2))
    result = run_cli("run", str(pipeline), "-o", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    lean = [e for e in events if e.get("event") == "lean_mlps"]
    assert lean == [{"stage": "sft", "event": "lean_mlps", "modules": 2}]  # one per layer
    losses = [e["loss"] for e in events if "loss" in e and e.get("stage") == "sft"]
    assert losses and all(math.isfinite(v) for v in losses)
