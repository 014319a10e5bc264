"""``template-keywords``: a reward for completions that use the row's keywords."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ftp import Reward, StrictConfig, UserError


class KeywordReward(Reward):
    """The fraction of a row's keywords that the completion mentions (0.0 to 1.0)."""

    name = "template-keywords"

    class Config(StrictConfig):
        """Which row field holds the keywords, and how to match them."""

        field: str = Field("keywords", description="Row field: a list or a comma-separated "
                           "string of keywords.")
        ignore_case: bool = Field(True, description="Match regardless of case.")

    def score(self, prompts: list[Any], completions: list[str],
              rows: list[dict[str, Any]]) -> list[float | None]:
        """One score per completion; None for a row without keywords (left out of the sum)."""
        scores: list[float | None] = []
        for completion, row in zip(completions, rows, strict=True):
            if self.config.field not in row:
                raise UserError(f"the row has no field {self.config.field!r}; set `field`")
            words = keywords(row[self.config.field])
            if not words:
                scores.append(None)
                continue
            text = completion.lower() if self.config.ignore_case else completion
            found = [w for w in words if (w.lower() if self.config.ignore_case else w) in text]
            scores.append(len(found) / len(words))
        return scores


def keywords(value: Any) -> list[str]:
    """The keywords of a row field: a list, or a comma-separated string."""
    items = value if isinstance(value, list) else str(value or "").split(",")
    return [str(w).strip() for w in items if str(w).strip()]
