"""Turning formatted records into token ids and loss labels, checked against the chat template.

Conversations are rendered by the tokenizer's own chat template, exactly as at inference.
Loss masks come from rendering prefixes of the conversation: the tokens between "everything
before this assistant turn, plus the generation prompt" and "everything up to and including
this turn" are the turn's answer, ending with the template's end-of-turn token (the EOS that
teaches the model to stop). Text after that token (a newline, say) carries no loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ftp import UserError

IGNORE = -100


@dataclass
class Tokenized:
    """Token ids and labels for a list of records, with what happened on the way."""

    rows: list[dict[str, list[int]]] = field(default_factory=list)
    truncated: int = 0
    dropped: int = 0
    tokens: int = 0
    loss_tokens: int = 0


def _ids(out: Any) -> list[int]:
    """``apply_chat_template(tokenize=True)`` returns ids or a BatchEncoding by version."""
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    return list(out)


def render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool = False
           ) -> list[int]:
    """Token ids of ``messages`` through the tokenizer's chat template."""
    return _ids(tokenizer.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=generation_prompt
    ))


def require_chat_template(tokenizer: Any) -> None:
    """Refuse a tokenizer without a chat template: conversations need one."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("the tokenizer has no chat template, so conversations cannot be "
                        "rendered; use a chat model, or a text format for plain training")


def conversation(
    tokenizer: Any, messages: list[dict[str, str]], assistant_only: bool = True
) -> dict[str, list[int]]:
    """Token ids and labels for one conversation.

    Args:
        tokenizer: A tokenizer with a chat template.
        messages: The conversation; it ends with an assistant turn.
        assistant_only: Loss on assistant turns (with their end-of-turn token) only;
            otherwise on every token.

    Raises:
        UserError: when the template renders prefixes inconsistently, so that masks would
            be wrong.

    """
    ids = render(tokenizer, messages)
    eos = tokenizer.eos_token_id
    labels = [IGNORE] * len(ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(tokenizer, messages[:i], generation_prompt=True) if i else []
        # The prompt's last token may merge with the answer's first ("assistant: " + "The" is
        # "assistant:" + " The"): the answer then starts at that merged token, not after it.
        start = _common_prefix(ids, prompt)
        upto = render(tokenizer, messages[: i + 1])
        if ids[: len(upto)] != upto or start > len(upto) or start < len(prompt) - 1:
            raise UserError("the chat template renders a conversation's prefix differently from "
                            "the whole conversation, so answer tokens cannot be located")
        end = len(upto)
        span = upto[start:end]
        if eos in span:
            end = start + len(span) - span[::-1].index(eos)  # through the last EOS of the turn
        labels[start:end] = ids[start:end]
    if messages[-1]["role"] == "assistant" and eos is not None:
        last = [j for j, lab in enumerate(labels) if lab != IGNORE]
        if not last or ids[last[-1]] != eos:
            # A template that does not close the turn with EOS: add it, or the model never stops.
            cut = (last[-1] + 1) if last else len(ids)
            ids = ids[:cut] + [eos]
            labels = labels[:cut] + [eos]
    if not assistant_only:
        labels = list(ids)
    return {"input_ids": ids, "labels": labels}


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def text(tokenizer: Any, value: str) -> dict[str, list[int]]:
    """Token ids of plain text followed by EOS; loss on every token."""
    ids = list(tokenizer(value, add_special_tokens=True)["input_ids"])
    if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
        ids.append(tokenizer.eos_token_id)
    return {"input_ids": ids, "labels": list(ids)}


def tokenize_records(
    tokenizer: Any,
    records: list[dict[str, Any]],
    max_length: int | None,
    assistant_only: bool = True,
) -> Tokenized:
    """Tokenize records of the conversational, prompt/completion or language-modeling shape."""
    out = Tokenized()
    for record in records:
        if "messages" in record:
            row = conversation(tokenizer, record["messages"], assistant_only)
        elif "prompt" in record and "completion" in record:
            msgs = [{"role": "user", "content": record["prompt"]},
                    {"role": "assistant", "content": record["completion"]}]
            row = conversation(tokenizer, msgs, assistant_only)
        elif "text" in record:
            row = text(tokenizer, record["text"])
        else:
            raise UserError(f"cannot tokenize a record with keys {sorted(record)}")
        if max_length is not None and len(row["input_ids"]) > max_length:
            out.truncated += 1
            row = {k: v[:max_length] for k, v in row.items()}
        if all(lab == IGNORE for lab in row["labels"][1:]):
            out.dropped += 1  # nothing left to learn after truncation
            continue
        out.tokens += len(row["input_ids"])
        out.loss_tokens += sum(lab != IGNORE for lab in row["labels"][1:])
        out.rows.append(row)
    return out
