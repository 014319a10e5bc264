"""``prompt``: prompts to complete, for methods that generate their own completions (GRPO).

The row's other fields are kept next to the prompt: rewards compare a completion with them
(``numeric_answer`` with ``answer``, say).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ftp import Format, Shape, StrictConfig, hookimpl


class Example(BaseModel):
    """A worked example: a prompt and the answer wanted, shown as an earlier exchange."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, description="What the user asks.")
    completion: str = Field(min_length=1, description="The answer, as the model should write it.")


class Prompt(Format):
    """A prompt column; the row's other fields are kept for rewards (prompt-only shape)."""

    name = "prompt"
    produces = Shape.PROMPT_ONLY

    class Config(StrictConfig):
        """The prompt column, and whether it is a chat turn."""

        prompt: str = Field("prompt", description="Column with the prompt.")
        chat: bool = Field(
            True, description="true: the prompt is a user turn, rendered by the chat template "
            "with the generation prompt; false: plain text completed as it is (base models)."
        )
        system_prompt: str | None = Field(None, description="A system prompt for every row.")
        template: str | None = Field(
            None, description="Text around the prompt, '{prompt}' where it goes: an "
            "instruction, or worked examples before it (few-shot)."
        )
        examples: list[Example] = Field(
            default_factory=list, description="Worked examples as earlier chat turns: each "
            "{ prompt, completion } becomes a user turn and the assistant's answer before the "
            "row's prompt (chat = true only). A small model copies a format shown as its own "
            "earlier answer far more often than one described in an instruction."
        )

        @model_validator(mode="after")
        def _system_needs_chat(self) -> Prompt.Config:
            if not self.chat and self.system_prompt:
                raise ValueError("system_prompt needs chat = true")
            if self.template is not None and "{prompt}" not in self.template:
                raise ValueError("template must hold '{prompt}', where the prompt goes")
            if self.examples and not self.chat:
                raise ValueError("examples are chat turns and need chat = true; for plain "
                                 "text, write them into template")
            return self

    config: Config

    def convert(self, record: dict[str, Any]) -> dict[str, Any]:
        """The prompt (as messages with ``chat``) plus every other field of the row."""
        c = self.config
        prompt = record.get(c.prompt)
        if not isinstance(prompt, str):
            if c.prompt not in record:
                raise ValueError(f"missing field {c.prompt!r}; the row has {sorted(record)}")
            raise ValueError(f"field {c.prompt!r} should be text, got {type(prompt).__name__}")
        if not prompt.strip():
            raise ValueError(f"empty prompt in {c.prompt!r}")
        if "completion" in record and c.prompt != "completion":
            # TRL would take it for a ready-made completion; rewards see it under this name.
            raise ValueError("a field named 'completion' is reserved for the generated text; "
                             "rename it (e.g. 'reference')")
        rest = {k: v for k, v in record.items() if k != c.prompt}
        if c.template is not None:
            # str.replace, not str.format: the template's own braces (JSON, say) stay as written.
            prompt = c.template.replace("{prompt}", prompt)
        if not c.chat:
            return {**rest, "prompt": prompt}
        head = [{"role": "system", "content": c.system_prompt}] if c.system_prompt else []
        for shot in c.examples:
            head.append({"role": "user", "content": shot.prompt})
            head.append({"role": "assistant", "content": shot.completion})
        head.append({"role": "user", "content": prompt})
        return {**rest, "prompt": head}


@hookimpl
def ftp_formats() -> list[type]:
    """Register the prompt-only format."""
    return [Prompt]
