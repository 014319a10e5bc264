"""A GGUF file in llama.cpp (llama-cpp-python), as its users run it.

Conversations are rendered by the GGUF's own chat template (``tokenizer.chat_template`` in its
metadata, through llama-cpp-python's Jinja formatter, as its chat completions do) and
tokenized by llama.cpp's own tokenizer; generation is greedy and ends at any token llama.cpp
counts as an end of generation. llama-cpp-python is an optional dependency (``ftp[gguf]``).
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from ftp import RunError, UserError

INSTALL_HINT = ("llama-cpp-python is not installed: pip install 'ftp[gguf]' with "
                "CMAKE_ARGS=\"-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON\" "
                "(see README)")


def available() -> bool:
    """Whether llama-cpp-python can be imported."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


class LlamaCpp:
    """One GGUF file loaded in llama.cpp.

    Args:
        path: The .gguf file.
        n_ctx: Context length to allocate.
        logits: Keep every position's logits (for `greedy`'s logit gaps).

    Raises:
        UserError: llama-cpp-python missing, or a file llama.cpp cannot load.

    """

    def __init__(self, path: Path, n_ctx: int = 2048, logits: bool = False) -> None:
        try:
            import llama_cpp
        except ImportError:
            raise UserError(INSTALL_HINT) from None
        self._lib = llama_cpp
        # No longer than the model was trained for: llama.cpp warns on stderr otherwise.
        n_ctx = min(n_ctx, _trained_context(path) or n_ctx)
        try:
            self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, logits_all=logits,
                                       n_threads=_threads(), verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise UserError(f"llama.cpp could not load {path}: {exc}") from None
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise UserError(f"{path} has no chat template (tokenizer.chat_template)")
        self.template: str = template

    def piece(self, token: int) -> str:
        """The text of one token, special tokens included."""
        return self.llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    def is_end(self, token: int) -> bool:
        """Whether llama.cpp ends generation at ``token`` (EOS, EOT and the like)."""
        return bool(self._lib.llama_vocab_is_eog(self.llm._model.vocab, token))

    def end_ids(self) -> list[int]:
        """Every id llama.cpp ends generation at."""
        return [i for i in range(self.llm.n_vocab()) if self.is_end(i)]

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """``messages`` rendered by the GGUF's template and tokenized by llama.cpp."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        model = self.llm._model
        formatter = Jinja2ChatFormatter(
            template=self.template, eos_token=model.token_get_text(self.llm.token_eos()),
            bos_token=model.token_get_text(self.llm.token_bos()))
        try:
            # llama-cpp-python types messages as its own TypedDicts; plain dicts are what it reads.
            text = formatter(messages=cast(Any, messages)).prompt
        except Exception as exc:  # a template's raise_exception, or Jinja's own errors
            raise RunError(f"the GGUF's chat template failed: {exc}") from None
        # As llama-cpp-python's chat completions: the template writes its own special tokens.
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def greedy(self, ids: list[int], max_tokens: int) -> tuple[list[int], list[Any]]:
        """Greedy continuation of ``ids`` (ending at an end token) and each step's logits.

        Needs ``logits=True``.
        """
        import numpy as np

        self.llm.reset()
        self.llm.eval(ids)
        out: list[int] = []
        steps: list[Any] = []
        for _ in range(max_tokens):
            logits = np.array(self.llm.scores[self.llm.n_tokens - 1], dtype=np.float32)
            token = int(logits.argmax())
            out.append(token)
            steps.append(logits)
            if self.is_end(token):
                break
            self.llm.eval([token])
        return out, steps

    def stream(self, ids: list[int], max_tokens: int) -> Iterator[str | bool]:
        """Yield the answer's text as it is generated, then whether it stopped at an end token."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        tokens = self.llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True)
        for count, token in enumerate(tokens, 1):
            if self.is_end(token):
                yield True
                return
            yield decoder.decode(self.llm.detokenize([token]))
            if count >= max_tokens:
                break
        yield decoder.decode(b"", final=True)
        yield False


def _threads() -> int:
    """As ftp's torch: every core unless OMP_NUM_THREADS says otherwise."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return os.cpu_count() or 1


def _trained_context(path: Path) -> int | None:
    """The context length a GGUF file declares (``ARCH.context_length``), if it does."""
    import gguf

    try:
        fields = gguf.GGUFReader(str(path)).fields
        arch = fields["general.architecture"].contents()
        return int(fields[f"{arch}.context_length"].contents())
    except (KeyError, ValueError, OSError):
        return None
