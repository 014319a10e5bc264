"""An Ollama Modelfile for an exported GGUF: its template, stop tokens and system prompt.

Ollama renders prompts with Go templates, not the model's Jinja. ftp translates ChatML-style
templates (``<|im_start|>ROLE\\nCONTENT<|im_end|>\\n`` per message, SmolLM2's among them): it
recognises the style by rendering probe conversations with the Jinja template, writes the Go
template, and checks the translation by rendering a multi-turn conversation both ways — the
Jinja template through the tokenizer, the Go template by `render_go` (the subset ftp writes) —
with Ollama's rule that ``SYSTEM`` becomes the first message when a request has none. A
template that injects a default system prompt (SmolLM2's) gets it as ``SYSTEM``, unless the
run trained with its own.
"""

from __future__ import annotations

import re
from typing import Any

from ftp import UserError

START, END = "<|im_start|>", "<|im_end|>"

#: ChatML in Ollama's Go template syntax.
CHATML_GO = ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
             "{{ end }}<|im_start|>assistant\n")

_PROBE = [{"role": "user", "content": "U1 probe"},
          {"role": "assistant", "content": "A1 probe"},
          {"role": "user", "content": "U2 probe"}]
_CHECK = [{"role": "user", "content": "Hello there"},
          {"role": "assistant", "content": "Hi! What can I do?"},
          {"role": "user", "content": "Tell me a joke.\nA short one."},
          {"role": "assistant", "content": "Why did the chicken cross the road?"},
          {"role": "user", "content": "Why?"}]


def chatml(messages: list[dict[str, str]]) -> str:
    """``messages`` in ChatML with the assistant's generation prompt."""
    body = "".join(f"{START}{m['role']}\n{m['content']}{END}\n" for m in messages)
    return body + f"{START}assistant\n"


def _jinja(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    return str(tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                             tokenize=False))


def translate(tokenizer: Any) -> tuple[str, str | None]:
    """The Go template for ``tokenizer``'s chat template and the default system prompt it adds.

    Raises:
        UserError: for a template that is not ChatML-style.

    """
    system = [{"role": "system", "content": "S probe"}]
    default: str | None = None
    try:
        with_system = _jinja(tokenizer, system + _PROBE)
        without = _jinja(tokenizer, _PROBE)
    except Exception as exc:  # the template's own raise_exception or a Jinja error
        raise UserError(f"Ollama export: the chat template cannot render a conversation: "
                        f"{exc}") from None
    if with_system != chatml(system + _PROBE):
        raise UserError("Ollama export supports ChatML-style chat templates (<|im_start|>role "
                        "... <|im_end|>, as SmolLM2's); this model's template renders "
                        f"differently: {with_system[:80]!r}")
    if without != chatml(_PROBE):
        found = re.fullmatch(re.escape(f"{START}system\n") + r"(.*?)" + re.escape(f"{END}\n")
                             + re.escape(chatml(_PROBE)), without, flags=re.S)
        if not found:
            raise UserError("Ollama export: the chat template adds something ftp cannot "
                            f"translate when there is no system message: {without[:80]!r}")
        default = found.group(1)
    return CHATML_GO, default


def render_go(template: str, messages: list[dict[str, str]]) -> str:
    """Render the Go-template subset ftp writes: text, ``range .Messages``, ``.Role``/``.Content``.

    Trim markers (``{{-``, ``-}}``) drop the whitespace beside them, as in Go.
    """
    tokens = re.split(r"(\{\{-?\s*.*?\s*-?\}\})", template, flags=re.S)
    out: list[str] = []

    def emit(parts: list[str], message: dict[str, str] | None) -> None:
        i = 0
        while i < len(parts):
            part = parts[i]
            if not part.startswith("{{"):
                out.append(part)
                i += 1
                continue
            action = part.strip("{}-").strip()
            if action == "range .Messages":
                depth, j = 1, i + 1
                while depth:
                    inner = parts[j].strip("{}-").strip() if parts[j].startswith("{{") else ""
                    depth += inner.startswith(("range", "if")) - (inner == "end")
                    j += 1
                for m in messages:
                    emit(parts[i + 1:j - 1], m)
                i = j
            elif action in (".Role", ".Content") and message is not None:
                out.append(message[action[1:].lower()])
                i += 1
            else:
                raise ValueError(f"render_go does not handle {part!r}")

    trimmed: list[str] = []
    for k, part in enumerate(tokens):
        if not part.startswith("{{"):
            if k > 0 and tokens[k - 1].endswith("-}}"):
                part = part.lstrip()
            if k + 1 < len(tokens) and tokens[k + 1].startswith("{{-"):
                part = part.rstrip()
        trimmed.append(part)
    emit(trimmed, None)
    return "".join(out)


def verify(tokenizer: Any, template: str, system: str | None) -> None:
    """Render a multi-turn conversation with Jinja and with the Go template; they must agree.

    Raises:
        UserError: naming the first character where they differ.

    """
    for given in (None, "You are Nova."):
        messages = ([{"role": "system", "content": given}] if given else []) + _CHECK
        want = _jinja(tokenizer, messages)
        ollama = messages if given or not system else \
            [{"role": "system", "content": system}, *messages]
        got = render_go(template, ollama)
        if want != got:
            k = next((k for k, (a, b) in enumerate(zip(want, got, strict=False)) if a != b),
                     min(len(want), len(got)))
            raise UserError(f"Ollama export: the translated template renders differently at "
                            f"character {k}: Jinja {want[k:k + 30]!r}, Go {got[k:k + 30]!r}")


def modelfile(gguf_name: str, template: str, stops: list[str], system: str | None) -> str:
    """The Modelfile text."""
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{template}"""']
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    if system:
        lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"
