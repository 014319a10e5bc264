"""The ``ftp chat`` command, added through the ``ftp_cli_commands`` hook.

Nothing heavy is imported here: ``ftp --help`` lists this command without torch.
"""

from __future__ import annotations

import click

from ftp import hookimpl, quiet_libraries, reports_errors


@click.command("chat")
@click.argument("target", metavar="RUN_DIR|MODEL")
@click.option("--stage", metavar="NAME", help="In a run folder, this stage's model.")
@click.option("--system", metavar="TEXT",
              help="A system prompt for the conversation (default: the one a run trained with).")
@click.option("--prompt", metavar="TEXT",
              help="Answer this one message and exit (text piped on stdin does the same).")
@click.option("--max-tokens", type=click.IntRange(1), default=512, show_default=True,
              help="Longest answer, in tokens.")
@click.option("--debug", is_flag=True, help="Show tracebacks and library warnings.")
@reports_errors
def chat(target: str, stage: str | None, system: str | None, prompt: str | None,
         max_tokens: int, debug: bool) -> None:
    """Talk to a model: a run folder, a model folder, a catalog name or a .gguf file.

    Answers stream greedily through the model's own chat template and end at its end-of-turn
    token. Interactive on a terminal: /reset starts over, /exit or Ctrl-D ends.
    """
    quiet_libraries(debug)
    from ftp_builtin.use.chat import run_chat
    from ftp_builtin.use.source import resolve

    run_chat(resolve(target, stage), system, prompt, max_tokens)


@hookimpl
def ftp_cli_commands() -> list[click.Command]:
    """Add ``ftp chat``."""
    return [chat]
