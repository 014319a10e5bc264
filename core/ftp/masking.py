"""Secrets kept out of what ftp writes and shows: run records, the terminal, trackers.

Two things are masked:

- the value of any key that names a secret (``token``, ``hf_token``, ``password``,
  ``api_key``, ``secret``, ``credentials``...; not ``pad_token`` or ``role_key``);
- the password in a URI (``https://user:PASSWORD@host``), and Hugging Face tokens
  (``hf_...``), wherever they appear in text.

What is masked becomes ``***``; the user, host and path of a URI stay readable. Only what is
recorded or shown is masked: the values themselves are passed on unchanged to the code that
needs them.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"

#: A key whose last word is one of these names a secret.
_SECRET_WORDS = frozenset({"token", "password", "passwd", "pwd", "passphrase", "secret",
                           "credential", "credentials", "apikey", "auth", "bearer"})
#: Keys ending in one of these two words do too (``api_key``, ``aws_secret_access_key``).
_SECRET_PAIRS = frozenset({("api", "key"), ("access", "key"), ("secret", "key"),
                           ("private", "key"), ("auth", "key"), ("signing", "key"),
                           ("encryption", "key"), ("account", "key"), ("client", "secret")})
#: ``pad_token`` and the like hold a tokenizer's special tokens, not secrets.
_SPECIAL_TOKENS = frozenset({"pad", "eos", "bos", "unk", "sep", "cls", "mask", "special",
                             "additional", "start", "end", "image", "audio", "video"})

_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_URI_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s'\"]*):"
                           r"(?P<password>[^@/\s'\"]+)@")
_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b")
_TOML_PAIR = re.compile(r"(?P<key>[A-Za-z0-9_-]+|\"[^\"]+\"|'[^']+')(?P<eq>\s*=\s*)"
                        r"(?P<value>\"(?:[^\"\\]|\\.)*\"|'[^']*')")


def is_secret_key(key: object) -> bool:
    """Whether ``key`` names a secret (by its last word or two, in any naming style)."""
    words = [w.lower() for w in _WORD.findall(str(key))]
    if not words:
        return False
    last = words[-1]
    if last == "token" and len(words) > 1 and words[-2] in _SPECIAL_TOKENS:
        return False
    return last in _SECRET_WORDS or tuple(words[-2:]) in _SECRET_PAIRS


def mask_text(text: str) -> str:
    """``text`` with URI passwords and Hugging Face tokens masked."""
    text = _URI_PASSWORD.sub(lambda m: f"{m.group('head')}:{MASK}@", text)
    return _HF_TOKEN.sub(f"hf_{MASK}", text)


def mask_secrets(obj: Any) -> Any:
    """A copy of a JSON-like value with secrets masked: by key in mappings, in all text."""
    if isinstance(obj, dict):
        return {k: (MASK if is_secret_key(k) and _is_set(v) else mask_secrets(v))
                for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [mask_secrets(v) for v in obj]
    if isinstance(obj, str):
        return mask_text(obj)
    return obj


def mask_toml(text: str) -> str:
    """A TOML file's text with secret keys' string values and URI passwords masked."""

    def pair(m: re.Match[str]) -> str:
        key = m.group("key").strip("\"'")
        if is_secret_key(key):
            return f"{m.group('key')}{m.group('eq')}\"{MASK}\""
        return m.group(0)

    return mask_text(_TOML_PAIR.sub(pair, text))


def _is_set(value: Any) -> bool:
    """Only a value that could hold a secret is masked; ``None`` or ``false`` says none is set."""
    return value is not None and not isinstance(value, bool) and value != ""
