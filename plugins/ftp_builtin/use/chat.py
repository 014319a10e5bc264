"""``ftp chat``: talk to a model, streamed, through its own chat template.

Interactive on a terminal (``/reset`` forgets the conversation, ``/exit`` or Ctrl-D ends it);
with ``--prompt`` or text piped on stdin, one answer and exit. Generation is greedy and ends at
the model's end-of-turn token; an answer cut off at ``--max-tokens`` is said so on stderr. A
transformers model streams through ``TextIteratorStreamer`` from a generating thread; a .gguf
runs in llama.cpp with the file's own template and tokenizer.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from ftp_builtin.use.source import Source

#: Yields the answer's text pieces, then True if it ended at an end-of-turn token.
Replier = Callable[[list[dict[str, str]], int], Iterator["str | bool"]]


def transformers_replier(source: Source) -> Replier:
    """Stream greedy answers from a transformers model folder, catalog name or Hub id."""
    from threading import Thread

    import torch
    from transformers import TextIteratorStreamer

    from ftp_builtin.use.gguf_file import end_of_turn_ids
    from ftp_builtin.use.source import load

    model, tokenizer = load(source)
    stops = end_of_turn_ids(tokenizer, model.generation_config)

    def reply(messages: list[dict[str, str]], max_tokens: int) -> Iterator[str | bool]:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        result: dict[str, Any] = {}

        def generate() -> None:
            with torch.no_grad():
                result["out"] = model.generate(
                    **ids, max_new_tokens=max_tokens, do_sample=False, eos_token_id=stops,
                    pad_token_id=tokenizer.pad_token_id, streamer=streamer,
                    temperature=None, top_p=None, top_k=None)

        thread = Thread(target=generate, daemon=True)
        thread.start()
        try:
            yield from streamer
        finally:
            # The streamer ends at the stop token while generate may still be finishing in
            # torch; a process exiting then aborts ("terminate called without an active
            # exception"). Wait for it: at most one step.
            thread.join()
        new = result["out"][0, ids["input_ids"].shape[1]:].tolist() if "out" in result else []
        yield bool(new) and new[-1] in stops

    return reply


def llamacpp_replier(source: Source) -> Replier:
    """Stream greedy answers from a GGUF file in llama.cpp."""
    from pathlib import Path

    from ftp_builtin.use.llamacpp import LlamaCpp

    llm = LlamaCpp(Path(source.model))

    def reply(messages: list[dict[str, str]], max_tokens: int) -> Iterator[str | bool]:
        ids = llm.prompt_ids(messages)
        yield from llm.stream(ids, max_tokens)

    return reply


def answer(reply: Replier, messages: list[dict[str, str]], max_tokens: int) -> str:
    """Print one streamed answer on stdout and return its text; say on stderr if cut off."""
    parts: list[str] = []
    stopped = False
    for piece in reply(messages, max_tokens):
        if isinstance(piece, bool):
            stopped = piece
            continue
        parts.append(piece)
        click.echo(piece, nl=False)
        sys.stdout.flush()
    click.echo()
    if not stopped:
        click.echo(f"(cut off at --max-tokens {max_tokens})", err=True)
    return "".join(parts)


def run_chat(source: Source, system: str | None, prompt: str | None, max_tokens: int) -> None:
    """The chat: one answer for ``prompt`` (or piped stdin), else a conversation."""
    reply = llamacpp_replier(source) if source.is_gguf else transformers_replier(source)
    if system is None:
        system = source.system_prompt()  # a run's model talks as it was trained to
    start = [{"role": "system", "content": system}] if system else []
    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read().strip()
    if prompt is not None:
        answer(reply, [*start, {"role": "user", "content": prompt}], max_tokens)
        return
    click.echo(f"Chatting with {source.name}. /reset starts over, /exit or Ctrl-D ends.",
               err=True)
    messages = list(start)
    while True:
        try:
            line = input("you> ")
        except EOFError:
            click.echo()
            return
        text = line.strip()
        if text == "/exit":
            return
        if text == "/reset":
            messages = list(start)
            click.echo("(conversation reset)", err=True)
            continue
        if not text:
            continue
        messages.append({"role": "user", "content": text})
        click.echo("model> ", nl=False)
        messages.append({"role": "assistant", "content": answer(reply, messages, max_tokens)})
