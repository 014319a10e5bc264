"""The ``ftp data`` and ``ftp cache`` command groups (registered by ``ftp.cli``)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from ftp.cli import _fail, _load, _quiet_libraries, _State
from ftp.errors import FtpError


@click.group()
def data() -> None:
    """Look at a pipeline's data as training will: preview, inspect."""


_SET = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                    help="Override a value, e.g. --set data.x.limit=50 (repeatable).")


@data.command("preview")
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.option("--data", "name", default=None, metavar="NAME",
              help="One dataset (default: every dataset a stage trains on).")
@click.option("-n", "count", default=3, show_default=True, type=click.IntRange(min=1),
              help="Examples per dataset.")
@click.option("--json", "as_json", is_flag=True,
              help="Machine-readable: ids, labels (-100: no loss) and tokens per example.")
@click.option("--color/--no-color", default=None,
              help="Colour trained tokens (default: when stdout is a terminal and NO_COLOR "
              "is unset); without colour they are marked «like this».")
@_SET
@click.option("--debug", is_flag=True, help="Show tracebacks and library warnings.")
@click.pass_obj
def preview(state: _State, pipeline: Path, name: str | None, count: int, as_json: bool,
            color: bool | None, overrides: tuple[str, ...], debug: bool) -> None:
    """Show the first examples of PIPELINE's data as the model will see them.

    Each example is formatted and tokenized by the method of the stage that trains on the
    dataset, then decoded with special tokens visible. Tokens that carry loss are green on a
    terminal, and between « and » otherwise; each sequence shows its token counts.
    """
    from ftp.datacheck.common import load_tokenizer, targets
    from ftp.datacheck.preview import as_json as preview_json
    from ftp.datacheck.preview import counts, header, plain, preview, segments, styled

    _quiet_libraries(debug)
    try:
        p = _load(state, pipeline, overrides)
        chosen = targets(p, name, everything=False)
        tokenizer = load_tokenizer(p)
        previews = [preview(p, t, tokenizer, count) for t in chosen]
    except FtpError as exc:
        _fail(exc, debug)
    if as_json:
        click.echo(json.dumps({"pipeline": p.name,
                               "datasets": [preview_json(pv, tokenizer) for pv in previews]},
                              indent=1, ensure_ascii=False))
        return
    if color is None:
        color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    from rich.console import Console

    console = Console(force_terminal=True, highlight=False) if color else None
    for pv in previews:
        click.echo(pv.target.describe())
        for i, ex in enumerate(pv.examples):
            click.echo(header(pv, i))
            for seq in ex.sequences:
                segs = segments(tokenizer, seq)
                click.echo(f"[{counts(seq)}]")
                if console is not None:
                    console.print(styled(segs), soft_wrap=True)
                else:
                    click.echo(plain(segs))
            click.echo()


@data.command("inspect")
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.option("--data", "name", default=None, metavar="NAME",
              help="One dataset (default: every dataset in the pipeline).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Where to write the report (default: beside the pipeline's run folder, "
              "runs/NAME.data-inspect).")
@_SET
@click.option("--debug", is_flag=True, help="Show tracebacks and library warnings.")
@click.pass_obj
def inspect(state: _State, pipeline: Path, name: str | None, out_dir: Path | None,
            overrides: tuple[str, ...], debug: bool) -> None:
    """Write a quality report of PIPELINE's data: report.md, report.json, histograms.

    Per dataset: rows read and skipped (with reasons), empty fields, exact and near
    duplicates, train/held-out leakage, token length percentiles, rows truncated at
    max_length, label balance, and conversations that do not end with an assistant turn.
    """
    from ftp.datacheck.common import load_tokenizer, targets
    from ftp.datacheck.inspect import inspect as run_inspect
    from ftp.datacheck.inspect import leakage_lines, summary_lines
    from ftp.runner import default_run_dir

    _quiet_libraries(debug)
    try:
        p = _load(state, pipeline, overrides)
        chosen = targets(p, name, everything=True)
        # Beside the run folder, not in it: `ftp run` refuses a non-empty run folder, and
        # --overwrite would delete the report.
        run_dir = default_run_dir(p, None)
        where = out_dir or run_dir.with_name(run_dir.name + ".data-inspect")
        tokenizer = load_tokenizer(p)
        result = run_inspect(p, chosen, tokenizer, where)
    except FtpError as exc:
        _fail(exc, debug)
    for d in result["datasets"]:
        for line in summary_lines(d):
            click.echo(line)
    for line in leakage_lines(result["leakage"]):
        click.echo(line)
    click.echo(f"report: {where / 'report.md'} (and report.json, lengths-*.png)")


@click.group()
def cache() -> None:
    """The tokenized-data cache ($FTP_TOKENIZED_CACHE_DIR, default ~/.cache/ftp/tokenized)."""


@cache.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def cache_ls(as_json: bool) -> None:
    """List cached tokenized datasets: key, size, when created, what was tokenized."""
    from ftp.cache import cache_root, entries

    found = entries()
    if as_json:
        click.echo(json.dumps([{"key": e.key, "path": str(e.path), "size": e.size,
                                "created": e.created, "description": e.description,
                                "rows": e.meta.get("rows")} for e in found], indent=1))
        return
    if not found:
        click.echo(f"{cache_root()}: empty")
        return
    for e in found:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.created))
        click.echo(f"{e.key[:12]}  {_size(e.size):>9}  {created}  {e.description}")
    total = sum(e.size for e in found)
    click.echo(f"{len(found)} entries, {_size(total)} in {cache_root()}")


@cache.command("clear")
@click.option("--yes", is_flag=True, help="Do not ask.")
def cache_clear(yes: bool) -> None:
    """Delete every cached tokenized dataset (they are rebuilt when next needed)."""
    from ftp.cache import cache_root, clear, entries

    found = entries()
    if not yes and found:
        click.confirm(f"delete {len(found)} cached entries in {cache_root()}?", abort=True)
    n, size = clear()
    click.echo(f"removed {n} entries ({_size(size)}) from {cache_root()}")


def _size(n: int) -> str:
    value: Any = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
