"""Parity of an exported GGUF with the transformers model it came from, in llama.cpp.

Three checks, each naming the first difference when it fails: the prompt token ids (the GGUF's
own template and llama.cpp's tokenizer against the tokenizer's ``apply_chat_template``), the
stop tokens (every id transformers ends a turn at ends generation in llama.cpp), and the first
greedy tokens of each answer. Answers must be equal at f32 and f16; at bf16 and q8_0 rounding
may flip a choice, so a difference there is reported, not failed. Where the two differ at a
near tie in transformers' own logits (gap under `NEAR_TIE`), rounding explains it: reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftp import RunError

#: Held-out conversations: one turn, a system prompt, several turns, digits, non-ASCII.
CONVERSATIONS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "Who are you?"}],
    [{"role": "system", "content": "You answer in one short sentence."},
     {"role": "user", "content": "What is 12345 + 678?"}],
    [{"role": "user", "content": "Hello!"},
     {"role": "assistant", "content": "Hi! How can I help you today?"},
     {"role": "user", "content": "Name three colours."}],
    [{"role": "user", "content": "Écris une phrase en français, s'il te plaît."}],
]

#: Greedy tokens compared per answer.
ANSWER_TOKENS = 16
#: Logit gap (transformers) under which a different greedy choice is a near tie.
NEAR_TIE = {"f32": 0.01, "f16": 0.05}


@dataclass
class Parity:
    """What the check found: notes to print and a record for export.json."""

    notes: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)


def check(gguf: Path, model: Any, tokenizer: Any, dtype: str,
          conversations: list[list[dict[str, str]]] | None = None) -> Parity:
    """Compare ``gguf`` in llama.cpp with ``model``/``tokenizer`` in transformers.

    Raises:
        RunError: on drift, naming the first difference, e.g. ``prompt 1: token 1:
            transformers 'system' (9690), llama.cpp 'user' (4093)``.
        UserError: when llama-cpp-python is not installed or cannot load the file.

    """
    from ftp_builtin.use.gguf_file import end_of_turn_ids
    from ftp_builtin.use.llamacpp import LlamaCpp

    conversations = conversations or CONVERSATIONS
    llm = LlamaCpp(gguf, n_ctx=512, logits=True)
    result = Parity()

    def hf(i: int) -> str:
        return f"{tokenizer.decode([i])!r} ({i})"

    def cpp(i: int) -> str:
        return f"{llm.piece(i)!r} ({i})"

    stops = end_of_turn_ids(tokenizer, model.generation_config)
    cpp_stops = llm.end_ids()
    missing = [i for i in stops if i not in cpp_stops]
    if missing:
        raise RunError(f"parity: transformers ends a turn at {', '.join(map(hf, missing))}, "
                       "which llama.cpp does not stop at")
    result.record["stop_tokens"] = [tokenizer.decode([i]) for i in stops]

    strict = dtype in NEAR_TIE
    answers: list[dict[str, Any]] = []
    for n, messages in enumerate(conversations, 1):
        want = _hf_prompt(tokenizer, messages)
        got = llm.prompt_ids(messages)
        if want != got:
            k = next((k for k, (a, b) in enumerate(zip(want, got, strict=False)) if a != b),
                     min(len(want), len(got)))
            a = hf(want[k]) if k < len(want) else "(end)"
            b = cpp(got[k]) if k < len(got) else "(end)"
            raise RunError(f"parity: prompt {n}: token {k}: transformers {a}, llama.cpp {b}")
        hf_tokens, hf_logits = _hf_greedy(model, want, stops)
        cpp_tokens, _ = llm.greedy(want, ANSWER_TOKENS)
        entry: dict[str, Any] = {"prompt": n, "tokens": len(hf_tokens),
                                 "equal": hf_tokens == cpp_tokens}
        if hf_tokens != cpp_tokens:
            k = next((k for k, (a, b) in enumerate(zip(hf_tokens, cpp_tokens, strict=False))
                      if a != b), min(len(hf_tokens), len(cpp_tokens)))
            where = f"answer {n}: token {k}: "
            if k >= len(hf_tokens) or k >= len(cpp_tokens):
                # Both stop at end tokens, checked above: one ran out of ANSWER_TOKENS.
                line = f"{where}one side stopped, the other did not"
                gap = float("inf")
            else:
                gap = float(hf_logits[k][hf_tokens[k]] - hf_logits[k][cpp_tokens[k]])
                line = (f"{where}transformers {hf(hf_tokens[k])}, llama.cpp "
                        f"{cpp(cpp_tokens[k])} (logit gap {gap:.4f})")
            entry["first_difference"] = line
            if strict and gap >= NEAR_TIE[dtype]:
                raise RunError(f"parity: {line}")
            why = "a near tie" if strict else f"{dtype} rounding, not checked"
            result.notes.append(f"{line}: {why}")
        answers.append(entry)
    equal = sum(a["equal"] for a in answers)
    result.record.update(prompts_equal=True, answers=answers,
                         summary=f"{equal}/{len(answers)} answers equal ({ANSWER_TOKENS} "
                         f"greedy tokens), prompts and stop tokens equal")
    return result


def _hf_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                        return_dict=False)
    return [int(i) for i in out]


def _hf_greedy(model: Any, ids: list[int], stops: list[int]) -> tuple[list[int], list[Any]]:
    """Greedy tokens of ``model`` after ``ids`` and each step's logits (numpy)."""
    import torch

    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=ANSWER_TOKENS,
                             do_sample=False, eos_token_id=stops, pad_token_id=stops[0],
                             output_logits=True, return_dict_in_generate=True,
                             temperature=None, top_p=None, top_k=None)
    tokens = out.sequences[0, len(ids):].tolist()
    return tokens, [step[0].float().numpy() for step in out.logits]
