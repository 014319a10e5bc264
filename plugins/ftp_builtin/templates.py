"""Chat templates a pipeline can choose instead of the tokenizer's own.

``[model] chat_template`` names one of `NAMED`, holds a Jinja template inline, or gives the
path of a file holding one. The provider sets it on the tokenizer as soon as it is loaded, so
the one template renders the training data, the evaluators' prompts and, saved with the
tokenizer (``chat_template.jinja``), every later inference.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from ftp import UserError

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

#: Templates known by name, and the special tokens each needs in the vocabulary.
NAMED: dict[str, tuple[str, tuple[str, ...]]] = {
    "chatml": (CHATML, ("<|im_start|>", "<|im_end|>")),
}


def is_inline(value: str) -> bool:
    """Whether ``value`` is a Jinja template itself rather than a name or a file path."""
    return "{{" in value or "{%" in value


def check_option(value: str) -> str:
    """Validate ``chat_template`` when the pipeline is checked: a name, inline Jinja, or a file.

    A file path is resolved against the current directory, as ``ftp run`` will.

    Raises:
        ValueError: for an empty value, or one that is none of the three.

    """
    if not value.strip():
        raise ValueError("chat_template is empty; leave it out to use the tokenizer's own")
    if value in NAMED or is_inline(value) or Path(value).expanduser().is_file():
        return value
    close = difflib.get_close_matches(value, list(NAMED), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"{value!r} is not a known template{hint}, inline Jinja, or an existing "
                     f"file; known templates: {', '.join(NAMED)}")


def resolve(value: str) -> tuple[str, tuple[str, ...]]:
    """The Jinja source ``value`` stands for, and the special tokens it needs.

    Raises:
        UserError: for an unknown name or a file that cannot be read.

    """
    if value in NAMED:
        return NAMED[value]
    if is_inline(value):
        return value, ()
    path = Path(value).expanduser()
    if not path.is_file():
        raise UserError(f"chat_template {value!r} is not a known template "
                        f"({', '.join(NAMED)}), inline Jinja, or an existing file")
    try:
        return path.read_text(encoding="utf-8"), ()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"chat_template: cannot read {path}: {exc}") from None


def apply(tokenizer: Any, value: str) -> None:
    """Set the template ``value`` stands for on ``tokenizer``.

    A named template's control tokens must already be single tokens of the vocabulary:
    otherwise they would be split into pieces of text and the model, whose embeddings do not
    know them, would never learn where a turn ends.

    Raises:
        UserError: for an unknown template or missing control tokens.

    """
    source, needs = resolve(value)
    vocab = tokenizer.get_vocab()
    missing = [t for t in needs
               if t not in vocab or tokenizer.encode(t, add_special_tokens=False) != [vocab[t]]]
    if missing:
        raise UserError(f"chat_template {value!r} needs the tokens {', '.join(missing)}, which "
                        "this tokenizer does not have; give a template written for this model "
                        "(a file or inline Jinja) instead")
    sample = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    try:  # render once now, so a broken template fails here and not mid-run
        tokenizer.apply_chat_template(sample, chat_template=source, tokenize=False)
    except Exception as exc:  # jinja2 raises several kinds; all mean the same to a user
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"chat_template {value!r} cannot render a conversation: {first}"
                        ) from None
    tokenizer.chat_template = source
