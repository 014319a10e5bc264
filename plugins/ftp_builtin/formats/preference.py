"""Built-in preference formats: ``sharegpt_preference``, ``preference`` and ``kto``.

Records take TRL's conversational preference forms, so that the chat template is applied by
the trainer exactly as at inference:

Each takes its column names, the keys inside its messages and a ``roles`` mapping for role
names of other datasets.

- paired (``preference``): ``{"prompt": [messages], "chosen": [assistant message],
  "rejected": [assistant message]}``;
- unpaired (``unpaired_preference``): ``{"prompt": [messages], "completion": [assistant
  message], "label": bool}``.

The prompt ends with a user (or tool) turn; ``prompt + chosen`` and ``prompt + rejected`` are
each a valid conversation (roles known, a system message only first, a non-empty answer).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ftp import Format, Shape, StrictConfig, hookimpl
from ftp_builtin.formats.chat import MESSAGE_ROLES, SHAREGPT_ROLES, check_conversation

Message = dict[str, str]

ChatRole = Literal["system", "user", "assistant", "tool"]


def _roles_field(defaults: str) -> Any:
    return Field(default_factory=dict, description="Role names in the data mapped to chat "
                 f"roles (system, user, assistant, tool), on top of {defaults}.")


def _check_pair(prompt: list[Message], answers: dict[str, list[Message]]) -> None:
    """Refuse an empty prompt, a prompt that ends with an answer, or a bad answer."""
    if not prompt:
        raise ValueError("the prompt is empty")
    if prompt[-1]["role"] == "assistant":
        raise ValueError("the prompt ends with an assistant message; it should end with the "
                         "user turn that the answers reply to")
    for name, answer in answers.items():
        if len(answer) != 1 or answer[0]["role"] != "assistant":
            raise ValueError(f"{name!r} should be one assistant message")
        try:
            check_conversation(prompt + answer)
        except ValueError as exc:
            raise ValueError(f"{name!r}: {exc}") from None


def _message(value: Any, where: str, role_key: str, content_key: str,
             roles: dict[str, str] | None = None) -> Message:
    """One {role, content} message from a dict with the given keys (roles mapped if given)."""
    if not isinstance(value, dict) or role_key not in value or content_key not in value:
        raise ValueError(f"{where} needs {role_key!r} and {content_key!r}")
    role, content = value[role_key], value[content_key]
    if roles is not None:
        if role not in roles:
            raise ValueError(f"{where} has unknown role {role!r}; expected one of {sorted(roles)}")
        role = roles[role]
    if not isinstance(content, str):  # str(None) would train on "None"
        raise ValueError(f"{where}: {content_key!r} should be text, got {type(content).__name__}")
    return {"role": role, "content": content}


class ShareGPTPreference(Format):
    """ShareGPT preference pairs: `conversations` turns, then a `chosen` and a `rejected` turn."""

    name = "sharegpt_preference"
    produces = Shape.PREFERENCE

    class Config(StrictConfig):
        """Column names, as in LLaMA-Factory's preference data."""

        conversations: str = Field("conversations", description="Column with the prompt turns.")
        chosen: str = Field("chosen", description="Column with the preferred answer turn.")
        rejected: str = Field("rejected", description="Column with the dispreferred answer turn.")
        system: str | None = Field("system", description="Column with a system prompt, if any.")
        role_key: str = Field("from", description="The key of a message's role.")
        content_key: str = Field("value", description="The key of a message's text.")
        roles: dict[str, ChatRole] = _roles_field("human/user, gpt/assistant, system, "
                                                  "observation/tool")

    config: Config

    def convert(self, record: dict[str, Any]) -> dict[str, Any]:
        """Map ShareGPT roles to chat roles; each answer becomes one assistant message."""
        c = self.config
        roles = {**SHAREGPT_ROLES, **c.roles}
        raw = record.get(c.conversations)
        if not isinstance(raw, list):
            raise ValueError(f"field {c.conversations!r} should be a list of turns")
        prompt = [_message(t, f"turn {i}", c.role_key, c.content_key, roles)
                  for i, t in enumerate(raw)]
        system = record.get(c.system) if c.system else None
        if system is not None and not isinstance(system, str):
            raise ValueError(f"field {c.system!r} should be text")
        if system and system.strip() and not (prompt and prompt[0]["role"] == "system"):
            prompt.insert(0, {"role": "system", "content": system})
        answers = {}
        for column in (c.chosen, c.rejected):
            if column not in record:
                raise ValueError(f"missing field {column!r}; the row has {sorted(record)}")
            answers[column] = [_message(record[column], f"field {column!r}", c.role_key,
                                        c.content_key, roles)]
        _check_pair(prompt, answers)
        return {"prompt": prompt, "chosen": answers[c.chosen], "rejected": answers[c.rejected]}


class Preference(Format):
    """Preference pairs in columns: prompt, chosen, rejected (text or lists of messages)."""

    name = "preference"
    produces = Shape.PREFERENCE

    class Config(StrictConfig):
        """Column names; a text prompt is a user turn, a text answer an assistant turn."""

        prompt: str = Field(
            "prompt", description="Column with the prompt: text or a list of messages. Without "
            "it, chosen and rejected must be whole conversations; their shared start is the prompt."
        )
        chosen: str = Field("chosen", description="Column with the preferred answer.")
        rejected: str = Field("rejected", description="Column with the dispreferred answer.")
        role_key: str = Field("role", description="The key of a message's role.")
        content_key: str = Field("content", description="The key of a message's text.")
        roles: dict[str, ChatRole] = _roles_field("the standard ones (developer → system, "
                                                  "function → tool)")
        system_prompt: str | None = Field(None, description="Prepended when a prompt has none.")

    config: Config

    def _messages(self, value: Any, column: str, role: str) -> list[Message]:
        c = self.config
        roles = {**MESSAGE_ROLES, **c.roles}
        if isinstance(value, str):
            return [{"role": role, "content": value}]
        if isinstance(value, dict):  # one message on its own
            value = [value]
        if not isinstance(value, list):
            raise ValueError(f"field {column!r} should be text or a list of messages, got "
                             f"{type(value).__name__}")
        return [_message(m, f"{column!r} message {i}", c.role_key, c.content_key, roles)
                for i, m in enumerate(value)]

    def convert(self, record: dict[str, Any]) -> dict[str, Any]:
        """Turn text into messages; split whole conversations at their shared start."""
        c = self.config
        for column in (c.chosen, c.rejected):
            if record.get(column) is None:
                raise ValueError(f"missing field {column!r}; the row has {sorted(record)}")
        chosen = self._messages(record[c.chosen], c.chosen, "assistant")
        rejected = self._messages(record[c.rejected], c.rejected, "assistant")
        if record.get(c.prompt) is not None:
            prompt = self._messages(record[c.prompt], c.prompt, "user")
        else:
            # TRL's implicit-prompt form: both columns hold the whole conversation.
            shared = 0
            while (shared < min(len(chosen), len(rejected)) - 1
                   and chosen[shared] == rejected[shared]):
                shared += 1
            prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
        if c.system_prompt and (not prompt or prompt[0]["role"] != "system"):
            prompt.insert(0, {"role": "system", "content": c.system_prompt})
        _check_pair(prompt, {c.chosen: chosen, c.rejected: rejected})
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def parse_label(value: Any) -> bool:
    """A desirability label: a boolean, or the text "true" / "false" (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"label should be true or false, got {value!r}")


class KTO(Format):
    """Unpaired preference (KTO): a conversation and whether its last answer is desirable."""

    name = "kto"
    produces = Shape.UNPAIRED_PREFERENCE

    class Config(StrictConfig):
        """Column names, as in LLaMA-Factory's KTO data."""

        messages: str = Field("messages", description="Column with the list of messages.")
        label: str = Field("label", description="Column with true (desirable) or false.")
        role_key: str = Field("role", description="The key of a message's role.")
        content_key: str = Field("content", description="The key of a message's text.")
        roles: dict[str, ChatRole] = _roles_field("the standard ones (developer → system, "
                                                  "function → tool)")
        system_prompt: str | None = Field(None, description="Prepended when a row has none.")

    config: Config

    def convert(self, record: dict[str, Any]) -> dict[str, Any]:
        """The last assistant message is the completion; the messages before it, the prompt."""
        c = self.config
        raw = record.get(c.messages)
        if not isinstance(raw, list):
            raise ValueError(f"field {c.messages!r} should be a list of messages")
        if c.label not in record:
            raise ValueError(f"missing field {c.label!r}; the row has {sorted(record)}")
        label = parse_label(record[c.label])
        roles = {**MESSAGE_ROLES, **c.roles}
        messages = [_message(m, f"message {i}", c.role_key, c.content_key, roles)
                    for i, m in enumerate(raw)]
        if c.system_prompt and (not messages or messages[0]["role"] != "system"):
            messages.insert(0, {"role": "system", "content": c.system_prompt})
        check_conversation(messages)
        prompt, completion = messages[:-1], messages[-1:]
        _check_pair(prompt, {"completion": completion})
        return {"prompt": prompt, "completion": completion, "label": label}


@hookimpl
def ftp_formats() -> list[type]:
    """Register the preference formats."""
    return [ShareGPTPreference, Preference, KTO]
