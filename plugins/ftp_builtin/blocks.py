"""Raw text as a pretraining stream: documents joined by EOS, cut into fixed-length blocks.

Shared by the ``cpt`` method and the ``perplexity`` evaluator, so that a model is scored on
held-out text exactly as it was trained on text.

Each document is tokenized without a chat template: the tokenizer's own special tokens (a BOS,
for tokenizers that add one) and the text, followed by exactly one EOS, so that the model
learns where a document ends and the next one starts from scratch. Special-token strings
inside the text (a literal ``<|im_end|>`` in a web page) are tokenized as plain text: raw text
cannot inject control tokens, and a document cannot end twice or start with two BOS.

The documents are concatenated and cut into blocks of ``block_size`` tokens, as in GPT-2 and
Llama pretraining and transformers' ``run_clm``: a block may hold the end of one document and
the start of the next, with the EOS between them; attention spans the boundary. Every token
carries loss. Training drops the last, partial block (counted as ``dropped_tokens``); evaluation
keeps it, so that every held-out token is scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ftp import UserError


@dataclass
class Blocks:
    """Token blocks cut from a list of documents, with what happened on the way."""

    blocks: list[list[int]] = field(default_factory=list)
    documents: int = 0
    #: Tokens in the stream: every document's tokens and its EOS.
    tokens: int = 0
    #: Tokens of the last, partial block when it is dropped.
    dropped_tokens: int = 0


def require_eos(tokenizer: Any) -> int:
    """The tokenizer's EOS id; without one, documents cannot be told apart."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise UserError("the tokenizer has no EOS token, so documents cannot be separated; "
                        "set one in the model's tokenizer_config.json")
    return int(eos)


def document_ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Each text's token ids: the tokenizer's own BOS if it adds one, the text, exactly one EOS."""
    eos = require_eos(tokenizer)
    bos = tokenizer.bos_token_id
    if not texts:
        return []
    encoded = tokenizer(texts, add_special_tokens=True, split_special_tokens=True,
                        verbose=False)["input_ids"]
    out = []
    for ids in encoded:
        ids = list(ids)
        if bos is not None and len(ids) > 1 and ids[0] == ids[1] == bos:
            ids = ids[1:]
        if not ids or ids[-1] != eos:  # a tokenizer set to add EOS itself has added it already
            ids.append(eos)
        out.append(ids)
    return out


def pack(tokenizer: Any, texts: list[str], block_size: int, keep_last: bool = False) -> Blocks:
    """Tokenize ``texts``, join them and cut the stream into blocks of ``block_size`` tokens.

    Args:
        tokenizer: The model's tokenizer.
        texts: The documents, in the order they are joined.
        block_size: Tokens per block.
        keep_last: Keep the last block even when it is shorter (evaluation); otherwise it is
            dropped and its tokens counted in ``dropped_tokens`` (training).

    """
    return pack_ids(document_ids(tokenizer, texts), block_size, keep_last)


def pack_ids(docs: list[list[int]], block_size: int, keep_last: bool = False) -> Blocks:
    """`pack` for documents already tokenized by `document_ids` (e.g. from the cache)."""
    stream: list[int] = []
    for ids in docs:
        stream.extend(ids)
    full = len(stream) // block_size
    result = Blocks(documents=len(docs), tokens=len(stream))
    result.blocks = [stream[i * block_size:(i + 1) * block_size] for i in range(full)]
    rest = stream[full * block_size:]
    if rest and keep_last:
        result.blocks.append(rest)
    elif rest:
        result.dropped_tokens = len(rest)
    return result


def check_block_size(model: Any, block_size: int) -> None:
    """Refuse blocks longer than the model's context."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(limit, int) and block_size > limit:
        raise UserError(f"block_size = {block_size} is longer than the model's context "
                        f"(max_position_embeddings = {limit}); lower block_size")
