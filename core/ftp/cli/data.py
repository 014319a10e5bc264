"""``ftp data preview`` and ``ftp data inspect``: a pipeline's data as training will see it.

The work is done by the `ftp.datacheck` library; this module only parses and prints.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from ftp.cli.common import (
    State,
    allow_code_option,
    debug_option,
    pass_state,
    quiet_libraries,
    reports_errors,
    set_option,
)


@click.group()
def data() -> None:
    """Look at a pipeline's data as training will: preview, inspect."""


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
@set_option
@debug_option
@allow_code_option
@pass_state
@reports_errors
def preview(state: State, pipeline: Path, name: str | None, count: int, as_json: bool,
            color: bool | None, overrides: tuple[str, ...], debug: bool) -> None:
    """Show the first examples of PIPELINE's data as the model will see them.

    Each example is formatted and tokenized by the method of the stage that trains on the
    dataset, then decoded with special tokens visible. Tokens that carry loss are green on a
    terminal, and between « and » otherwise; each sequence shows its token counts.
    """
    from ftp.datacheck.common import load_tokenizer, targets
    from ftp.datacheck.preview import as_json as preview_json
    from ftp.datacheck.preview import counts, header, plain, preview, segments, styled

    quiet_libraries(debug)
    p = state.pipeline(pipeline, overrides)
    chosen = targets(p, name, everything=False)
    tokenizer = load_tokenizer(p)
    previews = [preview(p, t, tokenizer, count) for t in chosen]
    for pv in previews:  # on stderr, so that --json output stays one document
        for warning in pv.warnings:
            click.echo(f"warning: {warning}", err=True)
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
@set_option
@debug_option
@allow_code_option
@pass_state
@reports_errors
def inspect(state: State, pipeline: Path, name: str | None, out_dir: Path | None,
            overrides: tuple[str, ...], debug: bool) -> None:
    """Write a quality report of PIPELINE's data: report.md, report.json, histograms.

    Per dataset: rows read and skipped (with reasons), empty fields, exact and near
    duplicates, train/held-out leakage, token length percentiles, rows truncated at
    max_length, label balance, conversations that do not end with an assistant turn, and
    assistant turns marked untrained (weight 0).
    """
    from ftp.datacheck.common import load_tokenizer, targets
    from ftp.datacheck.inspect import inspect as run_inspect
    from ftp.datacheck.inspect import leakage_lines, summary_lines
    from ftp.runner import default_run_dir

    quiet_libraries(debug)
    p = state.pipeline(pipeline, overrides)
    chosen = targets(p, name, everything=True)
    # Beside the run folder, not in it: `ftp run` refuses a non-empty run folder, and
    # --overwrite would delete the report.
    run_dir = default_run_dir(p, None)
    where = out_dir or run_dir.with_name(run_dir.name + ".data-inspect")
    tokenizer = load_tokenizer(p)
    result = run_inspect(p, chosen, tokenizer, where)
    for d in result["datasets"]:
        for line in summary_lines(d):
            click.echo(line)
    for line in leakage_lines(result["leakage"]):
        click.echo(line)
    click.echo(f"report: {where / 'report.md'} (and report.json, lengths-*.png)")


COMMANDS = [data]
