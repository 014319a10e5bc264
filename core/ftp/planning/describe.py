"""What a model's card and config say about it: languages, datasets, license, base or instruct.

Reported as found; anything not written down is ``unknown``, never guessed from elsewhere.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ftp.jsonfiles import read_json_object

UNKNOWN = "unknown"


def front_matter(readme: Path) -> dict[str, Any]:
    """The YAML front matter of a model card (README.md), or {}."""
    try:
        text = readme.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if not match:
        return {}
    import yaml  # type: ignore[import-untyped]  # a dependency of transformers; no stubs here

    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _listed(value: Any) -> str:
    if value is None or value == [] or value == "":
        return UNKNOWN
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def card_facts(name: str, source: Path | str | None, tokenizer: Any | None) -> dict[str, str]:
    """What the card (README.md front matter), config.json and tokenizer say of a model.

    Args:
        name: The candidate as given (catalog name, path, Hub id).
        source: Where the provider found the model: a local folder, or a Hub id.
        tokenizer: Its tokenizer, or None when it has none (a config alone).

    Returns:
        ``languages``, ``datasets``, ``license``, ``base_model``, ``kind`` (base, instruct or
        unknown) and ``chat_template`` (yes, no or unknown).

    """
    card: dict[str, Any] = {}
    config: dict[str, Any] = {}
    tok_config: dict[str, Any] = {}
    folder = Path(source) if isinstance(source, Path) else None
    if folder is not None and folder.is_dir():
        card = front_matter(folder / "README.md")
        config = read_json_object(folder / "config.json")
        tok_config = read_json_object(folder / "tokenizer_config.json")
    tags = [str(t).lower() for t in card.get("tags") or [] if isinstance(t, str)]
    words = " ".join([name.lower(), *tags, str(card.get("base_model") or "").lower()])
    if folder is not None and folder.name:
        words += " " + folder.name.lower()
    if re.search(r"instruct|chat|\bit\b|-it\b|sft|rlhf|dpo", words):
        kind = "instruct"
    elif "base" in tags or card.get("pipeline_tag") == "fill-mask":
        kind = "base"
    else:
        kind = UNKNOWN
    if tokenizer is not None:
        template = "yes" if getattr(tokenizer, "chat_template", None) else "no"
    elif tok_config:
        template = "yes" if tok_config.get("chat_template") else "no"
    else:
        template = UNKNOWN
    return {
        "languages": _listed(card.get("language")),
        "datasets": _listed(card.get("datasets")),
        "license": _listed(card.get("license")),
        "base_model": _listed(card.get("base_model")),
        "model_type": _listed(config.get("model_type")),
        "kind": kind,
        "chat_template": template,
    }
