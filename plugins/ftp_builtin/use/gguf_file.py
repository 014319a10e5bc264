"""Write a Llama-architecture transformers model as a GGUF file that llama.cpp loads.

Our own conversion, on the ``gguf`` package's writer: llama.cpp's tensor names, its order of
the rows of the query and key projections (it rotates interleaved pairs, transformers rotates
halves), the byte-level BPE vocabulary with merges, the pre-tokenizer llama.cpp must use to
split text as the Hugging Face tokenizer does, the special token ids and the chat template.
Anything else (another architecture, rope scaling, biases, a SentencePiece vocabulary) is
refused with one line rather than written wrong.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ftp import UserError

#: --dtype choices, and the GGUF file type each one records.
DTYPES = ("f32", "f16", "bf16", "q8_0")

#: transformers' per-layer tensor names → llama.cpp's (``blk.N.`` + this).
LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
TOP_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def check_architecture(config: Any) -> None:
    """Refuse, with one line, a model this writer cannot convert faithfully.

    Raises:
        UserError: for a non-Llama architecture or a Llama variant llama.cpp would run
            differently from transformers (rope scaling, biases).

    """
    arch = getattr(config, "model_type", None)
    if arch != "llama":
        raise UserError(f"GGUF export supports the Llama architecture (SmolLM2 and other Llama "
                        f"models); this model is {arch!r}")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) \
        or {}
    if rope.get("rope_type", "default") != "default":
        raise UserError(f"GGUF export does not support rope scaling {rope.get('rope_type')!r} "
                        "yet")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise UserError("GGUF export does not support Llama models with attention or MLP biases")


def rope_theta(config: Any) -> float:
    """The rotary base, wherever this transformers version keeps it."""
    rope = getattr(config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def permute_rows(weight: Any, heads: int) -> Any:
    """Reorder a q/k projection's rows from transformers' half-split to llama.cpp's pairs.

    transformers rotates dimension i with i + d/2 of each head; llama.cpp's Llama rope rotates
    2i with 2i + 1. Interleaving each head's two halves makes llama.cpp compute the same.
    """
    rows = weight.shape[0]
    return (weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def gguf_tensors(state: dict[str, Any], config: Any) -> list[tuple[str, Any]]:
    """(llama.cpp name, float32 numpy array) for every tensor of a Llama state dict.

    Raises:
        UserError: for a tensor with no llama.cpp counterpart.

    """
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    tied = bool(getattr(config, "tie_word_embeddings", False))
    out: list[tuple[str, Any]] = []
    for name, tensor in state.items():
        array = tensor.float().cpu().numpy()
        if name in TOP_NAMES:
            if name == "lm_head.weight" and tied:
                continue  # llama.cpp reuses token_embd when output.weight is absent
            out.append((TOP_NAMES[name], array))
            continue
        parts = name.split(".")
        if parts[:2] != ["model", "layers"] or ".".join(parts[3:]) not in LAYER_NAMES:
            raise UserError(f"GGUF export: tensor {name!r} has no llama.cpp counterpart")
        suffix = ".".join(parts[3:])
        if suffix == "self_attn.q_proj.weight":
            array = permute_rows(array, heads)
        elif suffix == "self_attn.k_proj.weight":
            array = permute_rows(array, kv_heads)
        out.append((f"blk.{parts[2]}.{LAYER_NAMES[suffix]}", array))
    return out


def encode(array: Any, dtype: str) -> tuple[Any, Any]:
    """The data and GGML type to store ``array`` as, for the file's ``dtype``.

    Norms and other 1-D tensors stay f32, as llama.cpp's own converter keeps them; a matrix
    whose rows do not split into q8_0 blocks of 32 is stored f16.
    """
    import numpy as np
    from gguf import GGMLQuantizationType as Q
    from gguf import quants

    if array.ndim < 2 or dtype == "f32":
        return array.astype(np.float32), Q.F32
    if dtype == "f16":
        return array.astype(np.float16), Q.F16
    qtype = Q.BF16 if dtype == "bf16" else Q.Q8_0
    try:
        return quants.quantize(array, qtype), qtype
    except quants.QuantError:
        return array.astype(np.float16), Q.F16


def pre_tokenizer_name(spec: dict[str, Any] | None) -> str:
    """The name llama.cpp knows for a tokenizer.json pre-tokenizer, or a UserError.

    Byte-level with GPT-2's split is ``gpt-2``; preceded by single-digit splitting (SmolLM2's
    original tokenizer) it is ``smollm``.
    """
    def byte_level(s: dict[str, Any]) -> bool:
        return (s.get("type") == "ByteLevel" and s.get("use_regex", True)
                and not s.get("add_prefix_space", False))

    if spec and byte_level(spec):
        return "gpt-2"
    if spec and spec.get("type") == "Sequence":
        steps = spec.get("pretokenizers", [])
        if (len(steps) == 2 and steps[0].get("type") == "Digits"
                and steps[0].get("individual_digits") and byte_level(steps[1])):
            return "smollm"
    raise UserError("GGUF export: the tokenizer's pre-tokenizer "
                    f"{json.dumps(spec)[:120]} has no llama.cpp equivalent known to ftp")


def vocabulary(tokenizer: Any, size: int) -> tuple[list[str], list[int], list[str]]:
    """Tokens, token types and merges of a byte-level BPE tokenizer, for ``size`` ids.

    Ids the tokenizer does not use (an embedding padded to a round size) become unused
    ``[PADn]`` tokens, as llama.cpp's converter writes them.
    """
    from gguf import TokenType

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec["model"]
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise UserError("GGUF export supports byte-level BPE tokenizers (as SmolLM2's); this "
                        f"one is {model.get('type')!r}"
                        + (" with byte fallback" if model.get("byte_fallback") else ""))
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [int(TokenType.UNUSED)] * size
    for text, i in model["vocab"].items():
        if i < size:
            tokens[i], types[i] = text, int(TokenType.NORMAL)
    for added in spec.get("added_tokens", []):
        i = added["id"]
        if i < size:
            tokens[i] = added["content"]
            types[i] = int(TokenType.CONTROL if added.get("special") else
                           TokenType.USER_DEFINED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return tokens, types, merges


def end_of_turn_ids(tokenizer: Any, generation_config: Any = None) -> list[int]:
    """The ids that end an assistant's turn: the EOS token and generation_config's."""
    ids: list[int] = []
    for source in (getattr(generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        for i in source if isinstance(source, list) else [source]:
            if i is not None and i not in ids:
                ids.append(int(i))
    return ids


def write_gguf(model: Any, tokenizer: Any, path: Path, dtype: str, name: str) -> None:
    """Write ``model`` (a transformers Llama) and ``tokenizer`` to ``path`` as GGUF.

    The file is written beside ``path`` under a temporary name and renamed when complete, so
    an interrupted export never leaves a truncated file where a good one is expected.

    Raises:
        UserError: when the model or tokenizer cannot be represented (see `check_architecture`).

    """
    import gguf

    config = model.config
    check_architecture(config)
    pre = pre_tokenizer_name(json.loads(tokenizer.backend_tokenizer.to_str()).get(
        "pre_tokenizer"))
    tokens, types, merges = vocabulary(tokenizer, config.vocab_size)
    tensors = gguf_tensors(model.state_dict(), config)
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "bf16": gguf.LlamaFileType.MOSTLY_BF16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(str(tmp), arch="llama")
    try:
        writer.add_name(name)
        writer.add_context_length(config.max_position_embeddings)
        writer.add_embedding_length(config.hidden_size)
        writer.add_block_count(config.num_hidden_layers)
        writer.add_feed_forward_length(config.intermediate_size)
        head_dim = getattr(config, "head_dim", None) or \
            config.hidden_size // config.num_attention_heads
        writer.add_rope_dimension_count(head_dim)
        writer.add_head_count(config.num_attention_heads)
        writer.add_head_count_kv(config.num_key_value_heads)
        writer.add_layer_norm_rms_eps(config.rms_norm_eps)
        writer.add_rope_freq_base(rope_theta(config))
        writer.add_vocab_size(config.vocab_size)
        writer.add_file_type(file_type)

        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges(merges)
        for add, token_id in ((writer.add_bos_token_id, tokenizer.bos_token_id),
                              (writer.add_eos_token_id, tokenizer.eos_token_id),
                              (writer.add_unk_token_id, tokenizer.unk_token_id),
                              (writer.add_pad_token_id, tokenizer.pad_token_id)):
            if token_id is not None:
                add(int(token_id))
        if tokenizer.eos_token_id is not None:
            # The end of an assistant's turn: llama.cpp stops generating there.
            writer.add_eot_token_id(int(tokenizer.eos_token_id))
        # transformers' tokenizers for these models add no BOS: the template writes its own.
        writer.add_add_bos_token(bool(getattr(tokenizer, "add_bos_token", False)))
        writer.add_add_eos_token(False)
        if tokenizer.chat_template:
            writer.add_chat_template(tokenizer.chat_template)

        for tensor_name, array in tensors:
            data, qtype = encode(array, dtype)
            writer.add_tensor(tensor_name, data, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        tmp.replace(path)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
