"""Built-in formats: alpaca, messages (OpenAI style), sharegpt, text.

Each turns a loader's record into one of ftp's shapes. Chat formats produce
``{"messages": [{"role", "content"}, ...]}``; the tokenizer's chat template is applied later,
by the method, so training and inference render conversations the same way.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ftp import Format, Shape, StrictConfig, hookimpl

ROLES = ("system", "user", "assistant", "tool")


def _text(record: dict[str, Any], column: str, *, required: bool = True) -> str:
    if column not in record or record[column] is None:
        if required:
            raise ValueError(f"missing field {column!r}; the row has {sorted(record)}")
        return ""
    value = record[column]
    if not isinstance(value, str):
        raise ValueError(f"field {column!r} should be text, got {type(value).__name__}")
    return value


def check_conversation(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Check roles and order; a conversation must end with a non-empty assistant turn."""
    if not messages:
        raise ValueError("empty conversation")
    for i, m in enumerate(messages):
        if m["role"] not in ROLES:
            raise ValueError(f"message {i} has role {m['role']!r}; expected one of {ROLES}")
        if m["role"] == "system" and i != 0:
            raise ValueError(f"message {i}: a system message may only come first")
    if messages[-1]["role"] != "assistant":
        raise ValueError("the conversation does not end with an assistant message, so there "
                         "is nothing to learn from its last turn")
    if not messages[-1]["content"].strip():
        raise ValueError("the last assistant message is empty")
    return messages


class Alpaca(Format):
    """Alpaca rows: instruction, optional input, output (and optional system)."""

    name = "alpaca"
    produces = Shape.CONVERSATIONAL

    class Config(StrictConfig):
        """Column names and an optional fixed system prompt."""

        instruction: str = Field("instruction", description="Column with the instruction.")
        input: str = Field("input", description="Column with the optional input.")
        output: str = Field("output", description="Column with the answer.")
        system: str | None = Field(None, description="Column with a per-row system prompt.")
        system_prompt: str | None = Field(None, description="A system prompt for every row.")

    def convert(self, record: dict[str, Any]) -> dict[str, Any]:
        """Instruction and input become the user turn, output the assistant turn."""
        c = self.config
        instruction = _text(record, c.instruction)
        extra = _text(record, c.input, required=False)
        prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        if not prompt.strip():
            raise ValueError(f"empty instruction in {c.instruction!r}")
        system = _text(record, c.system, required=False) if c.system else ""
        system = system or (c.system_prompt or "")
        messages = [{"role": "system", "content": system}] if system else []
        messages += [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": _text(record, c.output)},
        ]
        return {"messages": check_conversation(messages)}


class Messages(Format):
    """OpenAI-style conversations: a list of {role, content} messages."""

    name = "messages"
    produces = Shape.CONVERSATIONAL

    class Config(StrictConfig):
        """Where the messages are and what their keys are called."""

        messages: str = Field("messages", description="Column with the list of messages.")
        role_key: str = "role"
        content_key: str = "content"
        system_prompt: str | None = Field(None, description="Prepended when a row has none.")

    def convert(self, record: dict[str, Any]) -> dict[str, Any]:
        """Copy the messages, checking roles and order."""
        c = self.config
        raw = record.get(c.messages)
        if not isinstance(raw, list):
            raise ValueError(f"field {c.messages!r} should be a list of messages")
        messages = []
        for i, m in enumerate(raw):
            if not isinstance(m, dict) or c.role_key not in m or c.content_key not in m:
                raise ValueError(f"message {i} needs {c.role_key!r} and {c.content_key!r}")
            if not isinstance(m[c.content_key], str):
                raise ValueError(f"message {i}: content should be text")
            messages.append({"role": m[c.role_key], "content": m[c.content_key]})
        if c.system_prompt and (not messages or messages[0]["role"] != "system"):
            messages.insert(0, {"role": "system", "content": c.system_prompt})
        return {"messages": check_conversation(messages)}


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


class ShareGPT(Format):
    """ShareGPT conversations: {from, value} turns, function calls and observations included."""

    name = "sharegpt"
    produces = Shape.CONVERSATIONAL

    class Config(StrictConfig):
        """Where the turns are, and optional system and tools columns."""

        conversations: str = Field("conversations", description="Column with the turns.")
        system: str | None = Field("system", description="Column with a system prompt, if any.")
        tools: str | None = Field(
            "tools", description="Column with tool definitions, appended to the system prompt."
        )
        role_key: str = "from"
        content_key: str = "value"

    def convert(self, record: dict[str, Any]) -> dict[str, Any]:
        """Map ShareGPT roles to chat roles; function calls become assistant turns."""
        c = self.config
        raw = record.get(c.conversations)
        if not isinstance(raw, list):
            raise ValueError(f"field {c.conversations!r} should be a list of turns")
        messages = []
        for i, turn in enumerate(raw):
            if not isinstance(turn, dict) or c.role_key not in turn or c.content_key not in turn:
                raise ValueError(f"turn {i} needs {c.role_key!r} and {c.content_key!r}")
            role = SHAREGPT_ROLES.get(turn[c.role_key])
            if role is None:
                raise ValueError(f"turn {i} has unknown role {turn[c.role_key]!r}; expected one "
                                 f"of {sorted(SHAREGPT_ROLES)}")
            if not isinstance(turn[c.content_key], str):  # str(None) would train on "None"
                raise ValueError(f"turn {i}: {c.content_key!r} should be text, got "
                                 f"{type(turn[c.content_key]).__name__}")
            messages.append({"role": role, "content": turn[c.content_key]})
        system = _text(record, c.system, required=False) if c.system else ""
        tools = _text(record, c.tools, required=False) if c.tools else ""
        note = "You can call these tools:\n" + tools if tools.strip() else ""
        if messages and messages[0]["role"] == "system":
            # A system turn wins over the system column, but the tools must not be lost.
            messages[0]["content"] = _join(messages[0]["content"], note)
        elif system or note:
            messages.insert(0, {"role": "system", "content": _join(system, note)})
        return {"messages": check_conversation(messages)}


def _join(first: str, second: str) -> str:
    return f"{first}\n\n{second}" if first and second else first or second


class Text(Format):
    """Plain text for language modelling (loss on every token)."""

    name = "text"
    produces = Shape.LANGUAGE_MODELING

    class Config(StrictConfig):
        """Which column holds the text."""

        text: str = Field("text", description="Column with the text.")

    def convert(self, record: dict[str, Any]) -> dict[str, Any]:
        """Keep the text column."""
        text = _text(record, self.config.text)
        if not text.strip():
            raise ValueError(f"empty text in {self.config.text!r}")
        return {"text": text}


@hookimpl
def ftp_formats() -> list[type]:
    """Register the built-in formats."""
    return [Alpaca, Messages, ShareGPT, Text]
