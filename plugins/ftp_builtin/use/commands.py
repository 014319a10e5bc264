"""The ``ftp chat`` and ``ftp export`` commands, added through the ``ftp_cli_commands`` hook.

Nothing heavy is imported here: ``ftp --help`` lists these commands without torch.
"""

from __future__ import annotations

from pathlib import Path

import click

from ftp import hookimpl, quiet_libraries, reports_errors
from ftp.allocator import prefer as prefer_allocator
from ftp_builtin.use.gguf_file import DTYPES

TARGET_HELP = "A run folder, a model folder, a catalog name, a Hub id"


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
    prefer_allocator()  # first: it may start this command over with jemalloc
    quiet_libraries(debug)
    from ftp_builtin.use.chat import run_chat
    from ftp_builtin.use.source import resolve

    run_chat(resolve(target, stage), system, prompt, max_tokens)


@click.command("export")
@click.argument("target", metavar="RUN_DIR|MODEL")
@click.option("--format", "fmt", type=click.Choice(["gguf", "ollama", "safetensors"]),
              required=True, help="gguf: one file for llama.cpp; ollama: GGUF + Modelfile; "
              "safetensors: the merged transformers model.")
@click.option("--dtype", type=click.Choice(DTYPES), default=None,
              help="Weights: f32, f16, bf16, or q8_0 (GGUF only). Default: f16 for GGUF and "
              "Ollama, f32 for safetensors.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Output folder. Default: RUN_DIR/export for a run, else ./export.")
@click.option("--stage", metavar="NAME", help="In a run folder, this stage's model.")
@click.option("--overwrite", is_flag=True, help="Replace files an earlier export wrote.")
@click.option("--no-parity", is_flag=True,
              help="Skip the llama.cpp parity check of a GGUF (not recommended).")
@click.option("--debug", is_flag=True, help="Show tracebacks and library warnings.")
@reports_errors
def export(target: str, fmt: str, dtype: str | None, output: Path | None, stage: str | None,
           overwrite: bool, no_parity: bool, debug: bool) -> None:
    """Export a run's model (or any Llama-family model) as GGUF, Ollama or safetensors.

    Each GGUF is checked in llama.cpp against transformers: prompt tokens through the GGUF's
    own template, stop tokens, and greedy answers; drift exits 1 naming the first difference.
    """
    prefer_allocator()
    quiet_libraries(debug)
    from ftp_builtin.use import export as exporting
    from ftp_builtin.use.source import resolve

    source = resolve(target, stage)
    out = output or (source.run_dir / "export" if source.run_dir else Path("export"))
    record = exporting.export(source, fmt, dtype or exporting.default_dtype(fmt), out,
                              overwrite, parity=not no_parity)
    for path in record["files"]:
        click.echo(path)


@hookimpl
def ftp_cli_commands() -> list[click.Command]:
    """Add ``ftp chat`` and ``ftp export``."""
    return [chat, export]
