"""The ``lines`` data loader: plain-text files read as one record per line, paragraph or file.

Pair it with ``format = "text"`` for continued pretraining or plain language-model SFT on
notes, documentation or any other prose. Written only against ftp's public API.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ftp import DataLoader, LoadContext, StrictConfig, UserError

# A paragraph ends at a line that is empty or holds only whitespace.
_BLANK_LINE = re.compile(r"\n\s*\n")


class LinesLoader(DataLoader):
    """Plain-text files: one record per line, per blank-line separated paragraph, or per file."""

    name = "lines"

    class Config(StrictConfig):
        """Options of the lines loader."""

        path: str = Field(
            description="A text file, or a folder of them, relative to the pipeline file."
        )
        mode: Literal["line", "paragraph", "file"] = Field(
            "line", description="One record per line, per paragraph (blank-line separated), "
            "or per file."
        )
        min_chars: int = Field(
            1, ge=1, description="Skip documents shorter than this, after trimming whitespace."
        )
        field: str = Field("text", min_length=1, description="The record key for the text.")
        glob: str = Field(
            "*.txt", min_length=1, description="When path is a folder: which files to read."
        )

    def load(self, ctx: LoadContext) -> list[dict[str, Any]]:
        """Read the file(s) and split them into documents, in file order."""
        cfg = self.config
        records = []
        skipped = 0
        for path in self._files(ctx):
            for doc in split_text(_read(path), cfg.mode):
                if len(doc) < cfg.min_chars:
                    skipped += 1
                    continue
                records.append({cfg.field: doc})
        if not records:
            why = f" ({skipped} shorter than min_chars = {cfg.min_chars})" if skipped else ""
            raise UserError(f"{ctx.resolve(cfg.path)}: no text documents{why}")
        return records

    def _files(self, ctx: LoadContext) -> list[Path]:
        path = ctx.resolve(self.config.path)
        if path.is_file():
            return [path]
        if path.is_dir():
            files = sorted(p for p in path.glob(self.config.glob) if p.is_file())
            if not files:
                raise UserError(f"{path}: no files match glob {self.config.glob!r}")
            return files
        raise UserError(f"data file not found: {path}")


def split_text(text: str, mode: str) -> list[str]:
    """Split ``text`` into trimmed, non-empty documents by ``mode`` (line, paragraph, file)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if mode == "line":
        parts = text.split("\n")
    elif mode == "paragraph":
        parts = _BLANK_LINE.split(text)
    else:
        parts = [text]
    return [p.strip() for p in parts if p.strip()]


def _read(path: Path) -> str:
    try:
        # utf-8-sig: a byte-order mark some editors write must not start the first record.
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start} cannot be decoded)") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot be read: {exc.strerror}") from None
