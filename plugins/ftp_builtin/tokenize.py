"""Turning formatted records into token ids and loss labels, checked against the chat template.

Conversations are rendered by the tokenizer's chat template (its own, or the one
``[model] chat_template`` set), exactly as at inference. Loss masks come from rendering
prefixes of the conversation, so they need no ``{% generation %}`` markers in the template:
the tokens between "everything before this assistant turn, plus the generation prompt" and
"everything up to and including this turn" are the turn's answer, ending with the
template's end-of-turn token (the EOS that teaches the model to stop). Text after that token
(a newline, say) carries no loss. Every assistant turn is trained, nothing else unless
``assistant_only`` is false — except a turn marked ``"train": false`` (`ftp.turns`, OpenAI's
``weight: 0``), which is context only whatever ``assistant_only`` says: it is rendered exactly
as the template renders it, with no loss and no EOS added.

Tool use. Formats give assistant turns OpenAI-style ``tool_calls`` and a record-level
``tools`` list. A template that knows tools (it reads both ``tools`` and ``tool_calls``) gets
them as they are. Any other template gets plain messages (`for_template`): the tool
definitions, as JSON, join the system message; each call becomes a JSON line
``{"name": ..., "arguments": {...}}`` in the assistant's text, trained like any answer; tool
results stay messages of role ``tool``, which carry no loss.

Checks: the rendered conversation must not start with two BOS tokens (refused: the same
template would double it at inference); each trained assistant turn ends with EOS (added
after the turn where the template leaves it out, and counted); rows cut by ``max_length`` are
counted; a row left with no token to learn from is an error naming the row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ftp import IGNORE_INDEX, UserError
from ftp.tokenrows import TokenRows
from ftp.turns import TRAIN, is_trained, untrained_turns

#: Put before the tool definitions in the system message for templates without tool support.
TOOLS_PREAMBLE = (
    "You can call the tools below. To call one, answer with a JSON object "
    '{"name": <tool name>, "arguments": <object>}, one line per call; each result comes back '
    "in a tool message.\nTools:"
)

# Keys of Tokenized.fixes.
ADDED_EOS = "added_eos"
NO_BOS = "no_bos"


@dataclass
class Tokenized:
    """Token ids and labels for a list of records, with what happened on the way.

    Attributes:
        rows: ``{"input_ids", "labels"}`` per kept record, held as flat int32 arrays
            (`ftp.tokenrows.TokenRows`: 4 bytes a token, not a Python int each).
        truncated: Records longer than ``max_length``, cut to it.
        dropped: Records left out because nothing in them carries loss (only with
            ``skip_empty``; otherwise such a record is an error).
        tokens: Tokens in ``rows``.
        loss_tokens: Tokens in ``rows`` that carry loss (the first token of a row never can).
        examples: Records tokenized.
        longest: Tokens in the longest record before truncation.
        max_length: The limit rows were cut to, or None.
        fixes: What was repaired or noticed, by kind: ``added_eos`` (assistant turns the
            template does not end with EOS; one was added), ``no_bos`` (conversations not
            starting with the BOS the tokenizer puts before plain text).
        empty: ``(index, reason)`` of each dropped record.

    """

    rows: TokenRows = field(default_factory=TokenRows)
    truncated: int = 0
    dropped: int = 0
    tokens: int = 0
    loss_tokens: int = 0
    examples: int = 0
    longest: int = 0
    max_length: int | None = None
    fixes: dict[str, int] = field(default_factory=dict)
    empty: list[tuple[int, str]] = field(default_factory=list)

    def counts(self) -> dict[str, Any]:
        """Everything but the rows, as JSON-able values.

        ``Tokenized(rows=rows, **counts)`` rebuilds the whole, for a cache that stores the
        rows apart.
        """
        return {"truncated": self.truncated, "dropped": self.dropped, "tokens": self.tokens,
                "loss_tokens": self.loss_tokens, "examples": self.examples,
                "longest": self.longest, "max_length": self.max_length,
                "fixes": dict(self.fixes), "empty": [list(e) for e in self.empty]}

    def warnings(self, tokenizer: Any = None) -> list[str]:
        """One line per thing a user should know about: truncation, repairs, dropped rows."""
        out = []
        if self.truncated:
            out.append(f"{self.truncated} of {self.examples} examples are longer than "
                       f"max_length={self.max_length} tokens and were cut to it (the longest "
                       f"has {self.longest}); raise max_length to keep them whole")
        if self.fixes.get(ADDED_EOS):
            eos = getattr(tokenizer, "eos_token", None) or "EOS"
            out.append(f"the chat template does not end assistant turns with {eos}; it was "
                       f"added after {self.fixes[ADDED_EOS]} turns so the model learns to stop")
        if self.fixes.get(NO_BOS):
            bos = getattr(tokenizer, "bos_token", None) or "BOS"
            out.append(f"{self.fixes[NO_BOS]} conversations do not start with {bos}, which the "
                       "tokenizer puts before plain text: the chat template leaves it out. If "
                       "the model was pretrained with it, use a template that renders "
                       "{{ bos_token }} ([model] chat_template)")
        if self.dropped:
            first = "; ".join(f"row {i}: {why}" for i, why in self.empty[:3])
            out.append(f"{self.dropped} examples have no token to learn from and were left out "
                       f"({first})")
        return out


def _ids(out: Any) -> list[int]:
    """``apply_chat_template(tokenize=True)`` returns ids or a BatchEncoding by version."""
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    return list(out)


def supports_tools(tokenizer: Any) -> bool:
    """Whether the chat template renders tool definitions and tool calls itself."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("tool_use") or template.get("default")
    return isinstance(template, str) and "tools" in template and "tool_calls" in template


def tool_call_text(call: dict[str, Any]) -> str:
    """One tool call as the JSON line a template without tool support shows."""
    fn = call.get("function", call)
    return json.dumps({"name": fn["name"], "arguments": fn.get("arguments", {})},
                      ensure_ascii=False)


def for_template(tokenizer: Any, messages: list[dict[str, Any]],
                 tools: list[dict[str, Any]] | None = None
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The messages and tools to give this tokenizer's template (see the module docstring).

    Returns:
        The messages, and the tools to pass as ``apply_chat_template(tools=...)`` (None when
        they were written into the system message, or there are none).

    """
    has_calls = any(m.get("tool_calls") for m in messages)
    if not tools and not has_calls:
        return messages, None
    if supports_tools(tokenizer):
        return messages, tools or None
    plain = []
    for m in messages:
        content = m.get("content") or ""
        if m.get("tool_calls"):
            calls = "\n".join(tool_call_text(c) for c in m["tool_calls"])
            content = f"{content}\n{calls}" if content.strip() else calls
        plain.append({"role": m["role"], "content": content})
    if tools:
        listing = "\n".join(json.dumps(t.get("function", t), ensure_ascii=False) for t in tools)
        note = f"{TOOLS_PREAMBLE}\n{listing}"
        if plain and plain[0]["role"] == "system":
            plain[0] = {"role": "system", "content": f"{plain[0]['content']}\n\n{note}"}
        else:
            plain.insert(0, {"role": "system", "content": note})
    return plain, None


def render(tokenizer: Any, messages: list[dict[str, Any]], generation_prompt: bool = False,
           *, tools: list[dict[str, Any]] | None = None) -> list[int]:
    """Token ids of ``messages`` through the tokenizer's chat template.

    Raises:
        UserError: when the template refuses the conversation (some raise on roles they
            do not know, such as ``tool``).

    """
    try:
        out = tokenizer.apply_chat_template(
            messages, tools=tools, tokenize=True, add_generation_prompt=generation_prompt
        )
    except Exception as exc:
        from jinja2 import TemplateError

        if not isinstance(exc, TemplateError):
            raise
        raise UserError(f"the chat template cannot render this conversation: {exc}; roles: "
                        f"{[m['role'] for m in messages]}") from None
    return _ids(out)


def require_chat_template(tokenizer: Any) -> None:
    """Refuse a tokenizer without a chat template: conversations need one."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("the tokenizer has no chat template, so conversations cannot be "
                        "rendered; use a chat model, set [model] chat_template (e.g. "
                        "\"chatml\"), or use a text format for plain training")


def check_bos(tokenizer: Any, ids: list[int]) -> None:
    """Refuse ids that start with BOS twice.

    A template can render ``{{ bos_token }}`` at the start and again before the first user
    turn (Llama-2 style). Not repaired: the saved template would double it at inference too.
    """
    bos = tokenizer.bos_token_id
    if bos is not None and len(ids) >= 2 and ids[0] == ids[1] == bos:
        raise UserError(f"the chat template renders {tokenizer.bos_token} twice at the start of "
                        "a conversation; training and inference would both see a doubled BOS. "
                        "Use a template that renders it once ([model] chat_template)")


def adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts BOS before plain text (``add_special_tokens=True``)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def conversation(
    tokenizer: Any, messages: list[dict[str, Any]], assistant_only: bool = True, *,
    tools: list[dict[str, Any]] | None = None, train_from: int = 0,
) -> dict[str, list[int]]:
    """Token ids and labels for one conversation.

    Args:
        tokenizer: A tokenizer with a chat template.
        messages: The conversation; assistant turns may carry ``tool_calls``, and
            ``"train": false`` to be context only (no loss in either mode).
        assistant_only: Loss on assistant turns (with their end-of-turn token) only;
            otherwise on every token but those of untrained turns.
        tools: Tool definitions for the conversation, if any.
        train_from: Index of the first message whose assistant turns carry loss (a
            prompt/completion pair trains on its completion only).

    Raises:
        UserError: when the template renders prefixes inconsistently, so that masks would
            be wrong, refuses the conversation, or doubles BOS.

    """
    return _conversation(tokenizer, messages, assistant_only, tools, train_from)[0]


def _conversation(tokenizer: Any, messages: list[dict[str, Any]], assistant_only: bool,
                  tools: list[dict[str, Any]] | None, train_from: int
                  ) -> tuple[dict[str, list[int]], int]:
    """The row, and how many EOS tokens were added after assistant turns."""
    require_chat_template(tokenizer)
    trained = [is_trained(m) for m in messages]
    # The flag is ftp's, not the template's: templates get the messages without it.
    clean = [{k: v for k, v in m.items() if k != TRAIN} for m in messages]
    msgs, tools = for_template(tokenizer, clean, tools)
    shift = len(msgs) - len(messages)  # a system message for the tools came first
    train_from += shift
    ids = render(tokenizer, msgs, tools=tools)
    check_bos(tokenizer, ids)
    eos = tokenizer.eos_token_id
    # (start, end, ends with EOS, trained) per assistant turn after train_from; untrained
    # turns are located too, so that assistant_only=False can still leave them out.
    spans: list[tuple[int, int, bool, bool]] = []
    for i, message in enumerate(msgs):
        if message["role"] != "assistant" or i < train_from:
            continue
        if i == 0:
            raise UserError("the conversation starts with an assistant message; its answer "
                            "cannot be told apart from the template's preamble")
        prompt = render(tokenizer, msgs[:i], generation_prompt=True, tools=tools)
        # The prompt's last token may merge with the answer's first ("assistant: " + "The" is
        # "assistant:" + " The"): the answer then starts at that merged token, not after it.
        start = common_prefix(ids, prompt)
        # Up to the last message is the whole conversation, rendered already: the same call
        # would give the same ids (a third of the renders of a one-answer conversation).
        upto = ids if i + 1 == len(msgs) else render(tokenizer, msgs[: i + 1], tools=tools)
        previous_end = spans[-1][1] if spans else 0
        if (ids[: len(upto)] != upto or start > len(upto) or start < len(prompt) - 1
                or start < previous_end):
            raise UserError("the chat template renders a conversation's prefix differently from "
                            "the whole conversation, so answer tokens cannot be located")
        end = len(upto)
        span = upto[start:end]
        closed = eos is not None and eos in span
        if closed:
            end = start + len(span) - span[::-1].index(eos)  # through the last EOS of the turn
        spans.append((start, end, closed, trained[i - shift]))

    everything = not assistant_only
    out_ids: list[int] = []
    labels: list[int] = []
    added = 0
    pos = 0
    for start, end, closed, train in spans:
        head, body = ids[pos:start], ids[start:end]
        out_ids += head + body
        labels += head if everything else [IGNORE_INDEX] * len(head)
        labels += body if train else [IGNORE_INDEX] * len(body)
        pos = end
        if train and not closed and eos is not None:
            # The template does not close the turn with EOS: add it, or the model never stops.
            out_ids.append(eos)
            labels.append(eos)
            added += 1
    tail = ids[pos:]
    out_ids += tail
    labels += tail if everything else [IGNORE_INDEX] * len(tail)
    return {"input_ids": out_ids, "labels": labels}, added


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading ids ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _plain_ids(tokenizer: Any, value: str, special: bool) -> list[int]:
    # split_special_tokens: a literal "<|im_end|>" in someone's text is text, not a control
    # token the model would learn to emit mid-document.
    return list(tokenizer(value, add_special_tokens=special,
                          split_special_tokens=True)["input_ids"])


def text(tokenizer: Any, value: str) -> dict[str, list[int]]:
    """Token ids of plain text (with the tokenizer's BOS, if it adds one) then EOS; loss on all."""
    ids = _plain_ids(tokenizer, value, special=True)
    if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
        ids.append(tokenizer.eos_token_id)
    return {"input_ids": ids, "labels": list(ids)}


def prompt_completion(tokenizer: Any, prompt: str, completion: str, assistant_only: bool = True
                      ) -> dict[str, list[int]]:
    """Plain prompt then completion then EOS, no chat template; loss on the completion and EOS.

    The prompt is tokenized on its own, as it is at inference, so the boundary between the
    two never merges into one token.
    """
    head = _plain_ids(tokenizer, prompt, special=True)
    tail = _plain_ids(tokenizer, completion, special=False)
    eos = tokenizer.eos_token_id
    if eos is not None and (not tail or tail[-1] != eos):
        tail.append(eos)
    ids = head + tail
    labels = list(ids) if not assistant_only else [IGNORE_INDEX] * len(head) + tail
    return {"input_ids": ids, "labels": labels}


def _record(tokenizer: Any, record: dict[str, Any], assistant_only: bool
            ) -> tuple[dict[str, list[int]], int]:
    """A record of any tokenizable shape as a row, and the EOS tokens added to it."""
    if "messages" in record:
        return _conversation(tokenizer, record["messages"], assistant_only,
                             record.get("tools"), 0)
    if "prompt" in record and "completion" in record:
        prompt, completion = record["prompt"], record["completion"]
        if isinstance(prompt, str) and isinstance(completion, str):
            return prompt_completion(tokenizer, prompt, completion, assistant_only), 0
        if isinstance(prompt, list) and isinstance(completion, list):
            # TRL's conversational prompt/completion: only the completion is trained.
            return _conversation(tokenizer, prompt + completion, assistant_only,
                                 record.get("tools"), len(prompt))
        raise UserError("a prompt/completion record needs two texts or two lists of messages")
    if "text" in record:
        return text(tokenizer, record["text"]), 0
    raise UserError(f"cannot tokenize a record with keys {sorted(record)}")


def _snippet(record: dict[str, Any]) -> str:
    """A few words of a record, so a user can find it."""
    if "messages" in record:
        value = next((m.get("content") for m in record["messages"] if m["role"] == "user"), "")
    elif isinstance(record.get("prompt"), list):
        value = next((m.get("content") for m in record["prompt"] if m["role"] == "user"), "")
    else:
        value = record.get("prompt", record.get("text", ""))
    value = " ".join(str(value or "").split())
    return value[:50] + ("…" if len(value) > 50 else "")


def tokenize_records(
    tokenizer: Any,
    records: Sequence[dict[str, Any]],
    max_length: int | None,
    assistant_only: bool = True,
    *,
    skip_empty: bool = False,
    bos_expected: bool | None = None,
) -> Tokenized:
    """Tokenize records of the conversational, prompt/completion or language-modeling shape.

    Args:
        tokenizer: The run's tokenizer (with its chat template for conversations).
        records: Formatted records.
        max_length: Rows longer than this are cut to it (and counted), or None.
        assistant_only: Loss on assistant answers only (the completion, for a
            prompt/completion pair); otherwise on every token.
        skip_empty: Leave out, and count, rows with no token to learn from instead of
            refusing them.
        bos_expected: Whether conversations should start with the tokenizer's BOS (counted
            under ``no_bos`` when not); by default decided from the first record, as for a
            part of a longer list its first record should decide.

    Raises:
        UserError: naming each row with no token to learn from (unless ``skip_empty``),
            and for conversations the template cannot render or masks it cannot locate.

    """
    out = Tokenized(max_length=max_length)
    if bos_expected is None:
        bos_expected = expects_bos(tokenizer, records)
    empty: list[tuple[int, str]] = []
    for index, record in enumerate(records):
        row, added = _record(tokenizer, record, assistant_only)
        if added:
            out.fixes[ADDED_EOS] = out.fixes.get(ADDED_EOS, 0) + added
        is_chat = "messages" in record or isinstance(record.get("prompt"), list)
        if bos_expected and is_chat and row["input_ids"][:1] != [tokenizer.bos_token_id]:
            out.fixes[NO_BOS] = out.fixes.get(NO_BOS, 0) + 1
        out.examples += 1
        n = len(row["input_ids"])
        out.longest = max(out.longest, n)
        first = next((j for j, lab in enumerate(row["labels"]) if j and lab != IGNORE_INDEX), None)
        if max_length is not None and n > max_length:
            out.truncated += 1
            row = {k: v[:max_length] for k, v in row.items()}
        if all(lab == IGNORE_INDEX for lab in row["labels"][1:]):
            if first is not None:
                why = (f"cut to max_length={max_length} before its first trained token "
                       f"(position {first} of {n})")
            elif untrained_turns(record):
                why = "no token carries loss (every assistant turn is marked untrained)"
            else:
                why = "no token carries loss"
            empty.append((index, f"{why}: {_snippet(record)!r}"))
            continue
        out.tokens += len(row["input_ids"])
        out.loss_tokens += sum(lab != IGNORE_INDEX for lab in row["labels"][1:])
        out.rows.append(row)
    if empty and not skip_empty:
        refuse_empty(empty, len(records))
    out.dropped, out.empty = len(empty), empty
    return out


def expects_bos(tokenizer: Any, records: Sequence[dict[str, Any]]) -> bool:
    """Whether conversations among ``records`` should start with BOS (the first decides)."""
    return any("messages" in r or isinstance(r.get("prompt"), list)
               for r in records[:1]) and adds_bos(tokenizer)


def refuse_empty(empty: list[tuple[int, str]], total: int) -> None:
    """Refuse rows with no token to learn from, naming the first five.

    Raises:
        UserError: always.

    """
    listed = "; ".join(f"row {i}: {why}" for i, why in empty[:5])
    more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
    raise UserError(f"{len(empty)} of {total} examples have no token to learn from "
                    f"— {listed}{more}. Raise max_length, shorten those prompts, or remove "
                    "the rows")
