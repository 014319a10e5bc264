"""Per-turn loss: which assistant turns of a conversation a model trains on.

A conversational record's assistant message may carry ``"train": false``: the turn is
context only (shown to the model, never a target), like a wrong answer that the next turn
corrects. An assistant message without the key, or with ``"train": true``, is trained.
Formats set the flag from their data (OpenAI's ``"weight": 0 | 1`` in the ``messages`` and
``sharegpt`` formats); tokenizers honour it. The same holds for the assistant messages of a
conversational prompt/completion pair's ``completion``.
"""

from __future__ import annotations

from typing import Any

#: The key of a message that says whether the turn is trained (absent: it is).
TRAIN = "train"


def is_trained(message: dict[str, Any]) -> bool:
    """Whether an assistant ``message`` carries loss (only ``"train": false`` says no)."""
    return message.get(TRAIN) is not False


def untrained_turns(record: dict[str, Any]) -> int:
    """How many assistant turns of a record are marked ``"train": false``."""
    messages = record.get("messages")
    if not isinstance(messages, list):
        completion = record.get("completion")
        messages = completion if isinstance(completion, list) else []
    return sum(1 for m in messages
               if isinstance(m, dict) and m.get("role") == "assistant" and not is_trained(m))
