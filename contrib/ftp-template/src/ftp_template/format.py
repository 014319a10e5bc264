"""``template-qa``: question-answering records (SQuAD-style or flat) as prompt/completion."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ftp import Format, Shape, StrictConfig


class QAFormat(Format):
    """Question (with optional context) → answer, as prompt/completion text."""

    name = "template-qa"
    produces = Shape.PROMPT_COMPLETION

    class Config(StrictConfig):
        """Which columns hold what, and how the prompt reads."""

        question: str = Field("question", description="Column holding the question.")
        answer: str = Field(
            "answer", description="Column holding the answer: a string, or SQuAD's "
            "{'text': [...]} (the first answer is used)."
        )
        context: str | None = Field(
            "context", description="Column holding a passage to answer from; None for none. "
            "Records without it get no context line."
        )
        template: str = Field(
            "{context}Question: {question}\nAnswer:",
            description="The prompt; {context} becomes 'Context: ...' plus a newline, or ''.",
        )

    config: Config

    def convert(self, record: dict[str, Any]) -> dict[str, Any]:
        """Build ``{"prompt", "completion"}``; a record without question or answer is refused."""
        cfg = self.config
        question = str(record.get(cfg.question) or "").strip()
        if not question:
            raise ValueError(f"no {cfg.question!r} column, or it is empty")
        answer = record.get(cfg.answer)
        if isinstance(answer, dict):  # SQuAD: {"text": [...], "answer_start": [...]}
            answer = (answer.get("text") or [None])[0]
        answer = str(answer or "").strip()
        if not answer:
            raise ValueError(f"no {cfg.answer!r} column, or it is empty")
        context = str(record.get(cfg.context) or "").strip() if cfg.context else ""
        prompt = cfg.template.format(
            context=f"Context: {context}\n" if context else "", question=question
        )
        # The leading space keeps the answer a separate word after "Answer:".
        return {"prompt": prompt, "completion": " " + answer}
