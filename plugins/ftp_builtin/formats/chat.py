"""Built-in formats: alpaca, messages (OpenAI style), sharegpt, prompt_completion, text.

Each turns a loader's record into one of ftp's shapes. Chat formats produce
``{"messages": [{"role", "content"}, ...]}``, plus ``"tools"`` (OpenAI-style function
definitions) when the row has any; an assistant turn that calls tools carries
``"tool_calls": [{"type": "function", "function": {"name", "arguments"}}]``, and one the
model must not learn (OpenAI's ``"weight": 0``) carries ``"train": false`` (`ftp.turns`). The
chat template is applied later, when tokenizing, so training and inference render
conversations the same way (see ``ftp_builtin.tokenize`` for templates without tool support).

A message key that the ``messages`` or ``sharegpt`` format does not read is counted and
reported once per dataset (`Format.notes`), or refused with ``unknown_keys = "error"``.

A row that cannot be used raises ValueError with a short reason naming the field; the
pipeline reports it with the row's place, or skips it (``on_bad_rows``).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Literal

from pydantic import Field, model_validator

from ftp import Format, Shape, StrictConfig, hookimpl
from ftp.turns import TRAIN, is_trained

ROLES = ("system", "user", "assistant", "tool")

Message = dict[str, Any]


def _text(record: dict[str, Any], column: str, *, required: bool = True) -> str:
    if column not in record or record[column] is None:
        if required:
            raise ValueError(f"missing field {column!r}; the row has {sorted(record)}")
        return ""
    value = record[column]
    if not isinstance(value, str):
        raise ValueError(f"field {column!r} should be text, got {type(value).__name__}")
    return value


def check_conversation(messages: list[Message]) -> list[Message]:
    """Check roles, order and content; a conversation ends with an assistant turn.

    Raises:
        ValueError: naming the message at fault.

    """
    if not messages:
        raise ValueError("empty conversation")
    for i, m in enumerate(messages):
        role = m["role"]
        if role not in ROLES:
            raise ValueError(f"message {i} has role {role!r}; expected one of {ROLES}")
        if role == "system" and i != 0:
            raise ValueError(f"message {i}: a system message may only come first")
        if role == "assistant" and i == 0:
            raise ValueError("message 0 is an assistant message; a conversation starts with a "
                             "system or user message")
        if not isinstance(m.get("content"), str):
            raise ValueError(f"message {i} ({role}): content should be text, got "
                             f"{type(m.get('content')).__name__}")
        if not m["content"].strip() and not m.get("tool_calls"):
            if i == len(messages) - 1 and role == "assistant":
                raise ValueError("the last assistant message is empty")
            raise ValueError(f"message {i} ({role}): empty content")
    if messages[-1]["role"] != "assistant":
        raise ValueError("the conversation does not end with an assistant message, so there "
                         "is nothing to learn from its last turn")
    if not any(is_trained(m) for m in messages if m["role"] == "assistant"):
        raise ValueError("every assistant message has weight 0, so there is nothing to learn "
                         "from the row")
    return messages


def read_weight(message: dict[str, Any], key: str, role: str, where: str) -> bool | None:
    """Whether a message's OpenAI-style ``weight`` (0 or 1) trains it; None when it has none.

    Raises:
        ValueError: for another value, or a weight on a message that is not the assistant's
            (only the model's own turns are trained or not).

    """
    value = message.get(key)
    if value is None:  # absent, or null where other rows of a table have one
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value not in (0, 1):
        raise ValueError(f"{key!r} must be 0 or 1; {where} has {value!r}")
    if role != "assistant":
        raise ValueError(f"{key!r} on a message that is not the assistant's; {where} is a "
                         f"{role} message, and only assistant turns are trained or not")
    return value == 1


def set_weight(message: Message, trained: bool | None) -> Message:
    """Mark ``message`` untrained (``"train": false``) when its weight says so."""
    if trained is False:
        message[TRAIN] = False
    return message


class UnknownKeys:
    """Counts message keys a format does not read, or refuses them (``unknown_keys``)."""

    def __init__(self, policy: str, what: str) -> None:
        self.policy = policy
        self.what = what
        self.counts: Counter[str] = Counter()

    def check(self, message: dict[str, Any], known: set[str], where: str) -> None:
        """Count (or refuse) the keys of ``message`` outside ``known`` that hold a value."""
        unknown = sorted(k for k, v in message.items() if k not in known and v is not None)
        if not unknown:
            return
        if self.policy == "error":
            raise ValueError(f"unknown {self.what} key {unknown[0]!r}; {where} has "
                             f"{unknown}, the format reads {sorted(known)}")
        self.counts.update(unknown)

    def notes(self) -> list[str]:
        """One line naming each ignored key with how many messages had it."""
        if not self.counts:
            return []
        listed = ", ".join(f"{k!r} ({n})" for k, n in
                           sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])))
        return [f"{self.what} keys the format does not read were ignored: {listed}; map them "
                "in format_options, or set format_options.unknown_keys = \"error\" to refuse "
                "such rows"]


UnknownKeysPolicy = Literal["warn", "error"]


def normalize_tool(tool: Any, where: str) -> dict[str, Any]:
    """A tool definition in OpenAI form ``{"type": "function", "function": {...}}``.

    Accepts that form or the bare function ``{"name", "description", "parameters"}``.
    """
    if not isinstance(tool, dict):
        raise ValueError(f"{where}: a tool should be an object, got {type(tool).__name__}")
    fn = tool.get("function", tool) if tool.get("type", "function") == "function" else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise ValueError(f"{where}: a tool needs a \"name\" (OpenAI function form)")
    return {"type": "function", "function": fn}


def parse_tools(value: Any, column: str) -> list[dict[str, Any]]:
    """Tool definitions from a column holding a list or its JSON text; [] when empty."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"field {column!r} is not valid JSON ({exc.msg} at char "
                             f"{exc.pos})") from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise ValueError(f"field {column!r} should be a list of tools, got "
                         f"{type(value).__name__}")
    return [normalize_tool(t, f"field {column!r} item {i}") for i, t in enumerate(value)]


def normalize_call(call: Any, where: str) -> dict[str, Any]:
    """A tool call ``{"type": "function", "function": {"name", "arguments": dict}}``.

    Accepts OpenAI's form (arguments as JSON text, an ``id``) or a bare ``{"name",
    "arguments"}``; arguments given as JSON text are parsed, so templates see an object.
    """
    if not isinstance(call, dict):
        raise ValueError(f"{where}: a tool call should be an object, got {type(call).__name__}")
    fn = call.get("function", call)
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise ValueError(f"{where}: a tool call needs a \"name\"")
    arguments = fn.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            raise ValueError(f"{where}: the arguments of {fn['name']!r} are not valid JSON"
                             ) from None
    if not isinstance(arguments, dict):
        raise ValueError(f"{where}: the arguments of {fn['name']!r} should be an object")
    out: dict[str, Any] = {"type": "function",
                           "function": {"name": fn["name"], "arguments": arguments}}
    if isinstance(call.get("id"), str):
        out["id"] = call["id"]
    return out


def _with_tools(messages: list[Message], tools: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"messages": check_conversation(messages)}
    if tools:
        out["tools"] = tools
    return out


class Alpaca(Format):
    """Alpaca rows: instruction, optional input, output, optional system and history."""

    name = "alpaca"
    produces = Shape.CONVERSATIONAL

    class Config(StrictConfig):
        """Column names and an optional fixed system prompt."""

        instruction: str = Field("instruction", description="Column with the instruction.")
        input: str = Field("input", description="Column with the optional input.")
        output: str = Field("output", description="Column with the answer.")
        system: str | None = Field(None, description="Column with a per-row system prompt.")
        history: str | None = Field(
            "history", description="Column with earlier turns, [[instruction, answer], ...], "
            "rendered before this one (each answer trained too, unless train_history = false).",
        )
        train_history: bool = Field(
            True, description="false: the answers in history are context only (no loss); "
            "only the row's own output is trained.",
        )
        system_prompt: str | None = Field(None, description="A system prompt for every row.")

    config: Config

    def convert(self, record: dict[str, Any]) -> dict[str, Any]:
        """Earlier turns, then instruction and input as the user turn, output as the answer."""
        c = self.config
        instruction = _text(record, c.instruction)
        extra = _text(record, c.input, required=False)
        prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        if not prompt.strip():
            raise ValueError(f"empty instruction in {c.instruction!r}")
        output = _text(record, c.output)
        if not output.strip():
            raise ValueError(f"empty output in {c.output!r}")
        system = _text(record, c.system, required=False) if c.system else ""
        system = system or (c.system_prompt or "")
        messages = [{"role": "system", "content": system}] if system else []
        messages += self._history(record)
        messages += [{"role": "user", "content": prompt},
                     {"role": "assistant", "content": output}]
        return {"messages": check_conversation(messages)}

    def _history(self, record: dict[str, Any]) -> list[Message]:
        column = self.config.history
        value = record.get(column) if column else None
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValueError(f"field {column!r} should be a list of [instruction, answer] "
                             f"pairs, got {type(value).__name__}")
        turns = []
        for i, pair in enumerate(value):
            if (not isinstance(pair, list | tuple) or len(pair) != 2
                    or not all(isinstance(x, str) and x.strip() for x in pair)):
                raise ValueError(f"field {column!r} item {i} should be a pair of non-empty "
                                 "texts [instruction, answer]")
            answer: Message = {"role": "assistant", "content": pair[1]}
            turns += [{"role": "user", "content": pair[0]},
                      set_weight(answer, self.config.train_history)]
        return turns


def _content(value: Any, where: str) -> str:
    """Message content: text, or OpenAI's list of text parts joined."""
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                       and isinstance(p.get("text"), str) for p in value):
        return "".join(p["text"] for p in value)
    if not isinstance(value, str):  # str(None) would train on "None"
        raise ValueError(f"{where} should be text, got {type(value).__name__}")
    return value


MESSAGE_ROLES = {"system": "system", "developer": "system", "user": "user",
                 "assistant": "assistant", "tool": "tool", "function": "tool"}


class Messages(Format):
    """OpenAI-style conversations: {role, content} messages, tool calls and tool results."""

    name = "messages"
    produces = Shape.CONVERSATIONAL

    class Config(StrictConfig):
        """Where the messages are, what their keys and roles are called."""

        messages: str = Field("messages", description="Column with the list of messages.")
        role_key: str = Field("role", description="The key of a message's role.")
        content_key: str = Field("content", description="The key of a message's text.")
        tool_calls_key: str = Field("tool_calls", description="Key of an assistant message's "
                                    "tool calls (OpenAI form).")
        tools: str | None = Field("tools", description="Column with tool definitions (a list "
                                  "or its JSON text), if any.")
        roles: dict[str, Literal["system", "user", "assistant", "tool"]] = Field(
            default_factory=dict, description="Role names in the data mapped to chat roles, "
            "on top of the standard ones (developer → system, function → tool).",
        )
        system_prompt: str | None = Field(None, description="Prepended when a row has none.")
        weight_key: str = Field("weight", description="Key of an assistant message's weight "
                                "(OpenAI's): 0 = context only, no loss; 1 or absent = trained.")
        unknown_keys: UnknownKeysPolicy = Field(
            "warn", description="A message key the format does not read: \"warn\" (counted, "
            "shown once) or \"error\" (a bad row).",
        )

    config: Config

    def __init__(self, config: StrictConfig | None = None) -> None:
        super().__init__(config)
        self.unknown = UnknownKeys(self.config.unknown_keys, "message")

    def notes(self) -> list[str]:
        """The message keys that were ignored, with counts."""
        return self.unknown.notes()

    def convert(self, record: dict[str, Any]) -> dict[str, Any]:
        """Copy the messages with mapped roles, checking roles, order, content and weights."""
        c = self.config
        roles = {**MESSAGE_ROLES, **c.roles}
        common = {c.role_key, c.content_key, c.weight_key}
        raw = record.get(c.messages)
        if not isinstance(raw, list):
            raise ValueError(f"field {c.messages!r} should be a list of messages")
        messages = []
        for i, m in enumerate(raw):
            where = f"message {i}"
            if not isinstance(m, dict) or c.role_key not in m:
                raise ValueError(f"{where} needs {c.role_key!r} and {c.content_key!r}")
            role = roles.get(m[c.role_key])
            if role is None:
                raise ValueError(f"{where} has role {m[c.role_key]!r}; expected one of "
                                 f"{sorted(roles)} (map others with roles = {{...}})")
            calls = m.get(c.tool_calls_key) if role == "assistant" else None
            if calls is not None and not isinstance(calls, list):
                raise ValueError(f"{where}: {c.tool_calls_key!r} should be a list")
            content = m.get(c.content_key)
            if content is None and calls:  # OpenAI leaves content null beside tool calls
                content = ""
            elif c.content_key not in m:
                raise ValueError(f"{where} needs {c.role_key!r} and {c.content_key!r}")
            message: Message = {"role": role,
                                "content": _content(content, f"{where} {c.content_key!r}")}
            if not message["content"].strip() and not calls:
                # Named here, by the row's own index, before a system prompt shifts them.
                raise ValueError(f"{where} ({m[c.role_key]}): empty {c.content_key!r}")
            if calls:
                message["tool_calls"] = [normalize_call(x, f"{where} call {j}")
                                         for j, x in enumerate(calls)]
            if role == "tool":
                for key in ("name", "tool_call_id"):
                    if isinstance(m.get(key), str):
                        message[key] = m[key]
            known = common | ({c.tool_calls_key} if role == "assistant" else set()) | (
                {"name", "tool_call_id"} if role == "tool" else set())
            self.unknown.check(m, known, where)
            messages.append(set_weight(message, read_weight(m, c.weight_key, role, where)))
        if c.system_prompt and (not messages or messages[0]["role"] != "system"):
            messages.insert(0, {"role": "system", "content": c.system_prompt})
        tools = parse_tools(record.get(c.tools), c.tools) if c.tools else []
        return _with_tools(messages, tools)


#: ShareGPT role names → chat roles, as the preference formats read them.
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "function_call": "assistant",
    "observation": "tool",
    "tool": "tool",
}

SHAREGPT_KINDS = {**SHAREGPT_ROLES, "function_call": "function_call",
                  "observation": "observation", "tool": "observation"}

ShareGPTKind = Literal["user", "assistant", "system", "function_call", "observation"]


class ShareGPT(Format):
    """ShareGPT conversations: {from, value} turns, function calls and observations included."""

    name = "sharegpt"
    produces = Shape.CONVERSATIONAL

    class Config(StrictConfig):
        """Where the turns are, their keys and role names, and system and tools columns."""

        conversations: str = Field("conversations", description="Column with the turns.")
        system: str | None = Field("system", description="Column with a system prompt, if any.")
        tools: str | None = Field(
            "tools", description="Column with tool definitions (a list or its JSON text)."
        )
        role_key: str = Field("from", description="The key of a message's role.")
        content_key: str = Field("value", description="The key of a message's text.")
        roles: dict[str, ShareGPTKind] = Field(
            default_factory=dict, description="Role names in the data mapped to turn kinds, on "
            "top of human/user, gpt/assistant, system, function_call, observation/tool.",
        )
        weight_key: str = Field("weight", description="Key of an assistant turn's weight: "
                                "0 = context only, no loss; 1 or absent = trained.")
        unknown_keys: UnknownKeysPolicy = Field(
            "warn", description="A turn key the format does not read: \"warn\" (counted, "
            "shown once) or \"error\" (a bad row).",
        )

    config: Config

    def __init__(self, config: StrictConfig | None = None) -> None:
        super().__init__(config)
        self.unknown = UnknownKeys(self.config.unknown_keys, "turn")

    def notes(self) -> list[str]:
        """The turn keys that were ignored, with counts."""
        return self.unknown.notes()

    def convert(self, record: dict[str, Any]) -> dict[str, Any]:
        """Map roles; a function_call turn is an assistant tool call, an observation a tool turn."""
        c = self.config
        kinds = {**SHAREGPT_KINDS, **c.roles}
        raw = record.get(c.conversations)
        if not isinstance(raw, list):
            raise ValueError(f"field {c.conversations!r} should be a list of turns")
        messages: list[Message] = []
        known = {c.role_key, c.content_key, c.weight_key}
        for i, turn in enumerate(raw):
            if not isinstance(turn, dict) or c.role_key not in turn or c.content_key not in turn:
                raise ValueError(f"turn {i} needs {c.role_key!r} and {c.content_key!r}")
            self.unknown.check(turn, known, f"turn {i}")
            kind = kinds.get(turn[c.role_key])
            if kind is None:
                raise ValueError(f"turn {i} has unknown role {turn[c.role_key]!r}; expected one "
                                 f"of {sorted(kinds)} (map others with roles = {{...}})")
            value = turn[c.content_key]
            if not isinstance(value, str):  # str(None) would train on "None"
                raise ValueError(f"turn {i}: {c.content_key!r} should be text, got "
                                 f"{type(value).__name__}")
            if not value.strip():
                raise ValueError(f"turn {i} ({turn[c.role_key]}): empty {c.content_key!r}")
            if kind == "function_call":
                message: Message = {"role": "assistant", "content": "",
                                    "tool_calls": _calls(value, f"turn {i} (function_call)")}
            elif kind == "observation":
                message = {"role": "tool", "content": value}
            else:
                message = {"role": kind, "content": value}
            weight = read_weight(turn, c.weight_key, message["role"], f"turn {i}")
            messages.append(set_weight(message, weight))
        system = _text(record, c.system, required=False) if c.system else ""
        if system.strip() and not (messages and messages[0]["role"] == "system"):
            messages.insert(0, {"role": "system", "content": system})
        tools = parse_tools(record.get(c.tools), c.tools) if c.tools else []
        return _with_tools(messages, tools)


def _calls(value: str, where: str) -> list[dict[str, Any]]:
    """The calls of a function_call turn: a JSON object {name, arguments}, or a list of them."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        raise ValueError(f"{where}: not valid JSON; expected {{\"name\": ..., \"arguments\": "
                         "{...}}") from None
    calls = parsed if isinstance(parsed, list) else [parsed]
    if not calls:
        raise ValueError(f"{where}: no call")
    return [normalize_call(x, where) for x in calls]


class PromptCompletion(Format):
    """A prompt column and a completion column; loss on the completion only."""

    name = "prompt_completion"
    produces = Shape.PROMPT_COMPLETION

    class Config(StrictConfig):
        """Column names, and whether the pair is rendered as a chat."""

        prompt: str = Field("prompt", description="Column with the prompt.")
        completion: str = Field("completion", description="Column with the completion.")
        chat: bool = Field(
            True, description="true: the prompt is a user turn and the completion the "
            "assistant's answer, rendered by the chat template; false: plain text, the "
            "completion straight after the prompt (for base models).",
        )
        system: str | None = Field(None, description="Column with a per-row system prompt.")
        system_prompt: str | None = Field(None, description="A system prompt for every row.")

        @model_validator(mode="after")
        def _system_needs_chat(self) -> PromptCompletion.Config:
            if not self.chat and (self.system or self.system_prompt):
                raise ValueError("system prompts need chat = true")
            return self

    config: Config

    def convert(self, record: dict[str, Any]) -> dict[str, Any]:
        """Keep both texts: as messages (``chat``) or as they are."""
        c = self.config
        prompt, completion = _text(record, c.prompt), _text(record, c.completion)
        if not prompt.strip():
            raise ValueError(f"empty prompt in {c.prompt!r}")
        if not completion.strip():
            raise ValueError(f"empty completion in {c.completion!r}")
        if not c.chat:
            return {"prompt": prompt, "completion": completion}
        system = _text(record, c.system, required=False) if c.system else ""
        system = system or (c.system_prompt or "")
        head = [{"role": "system", "content": system}] if system else []
        head.append({"role": "user", "content": prompt})
        answer = [{"role": "assistant", "content": completion}]
        check_conversation(head + answer)
        return {"prompt": head, "completion": answer}


class Text(Format):
    """Plain text for language modelling (loss on every token)."""

    name = "text"
    produces = Shape.LANGUAGE_MODELING

    class Config(StrictConfig):
        """Which column holds the text."""

        text: str = Field("text", description="Column with the text.")

    config: Config

    def convert(self, record: dict[str, Any]) -> dict[str, Any]:
        """Keep the text column."""
        text = _text(record, self.config.text)
        if not text.strip():
            raise ValueError(f"empty text in {self.config.text!r}")
        return {"text": text}


@hookimpl
def ftp_formats() -> list[type]:
    """Register the built-in formats."""
    return [Alpaca, Messages, ShareGPT, PromptCompletion, Text]
