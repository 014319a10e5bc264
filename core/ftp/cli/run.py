"""``ftp validate`` and ``ftp run``: check a pipeline, and run it."""

from __future__ import annotations

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
from ftp.errors import FtpError, UserError


@click.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@set_option
@allow_code_option
@pass_state
@reports_errors
def validate(state: State, pipeline: Path, overrides: tuple[str, ...]) -> None:
    """Check PIPELINE: its shape, every component's options, and the references between them."""
    p = state.pipeline(pipeline, overrides)
    stages = " → ".join(f"{s.name} ({s.method.entry.name})" for s in p.stages)
    click.echo(f"{pipeline}: ok — {len(p.datasets)} dataset(s), stages: {stages}, "
               f"{len(p.evaluations)} evaluation(s)")


@click.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@set_option
@click.option("--output-dir", "-o", type=click.Path(path_type=Path), default=None,
              help="Run directory (default: runs/NAME).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier run in the run directory.")
@click.option("--from-stage", default=None, metavar="NAME",
              help="Resume an earlier run of this pipeline at stage NAME, starting from the "
              "previous stage's saved model; earlier stages' outputs are kept.")
@debug_option
@allow_code_option
@pass_state
@reports_errors
def run(state: State, pipeline: Path, overrides: tuple[str, ...], output_dir: Path | None,
        overwrite: bool, from_stage: str | None, debug: bool) -> None:
    """Run PIPELINE: load data and model, train each stage, evaluate, save."""
    p = state.pipeline(pipeline, overrides)
    from ftp.rundir import RunDir
    from ftp.runner import Runner, default_run_dir

    where = default_run_dir(p, str(output_dir) if output_dir else None)
    if from_stage is not None:
        if overwrite:
            raise UserError("--from-stage keeps the earlier run; it cannot be combined "
                            "with --overwrite")
        run_dir = RunDir.open_existing(where)
        runner = Runner(p, run_dir, from_stage=from_stage)
    else:
        run_dir = RunDir.create(where, overwrite=overwrite)
        runner = Runner(p, run_dir)
    quiet_libraries(debug)
    click.echo(f"ftp: running {p.name!r} into {run_dir.path}")
    try:
        runner.run()
    except FtpError:
        click.echo(f"run directory (kept, marked failed): {run_dir.path}", err=True)
        raise
    except KeyboardInterrupt:
        click.echo(f"interrupted; run directory marked failed: {run_dir.path}", err=True)
        sys.exit(130)
    click.echo(f"done: {run_dir.path} (results.json, summary.md, model/)")


COMMANDS = [validate, run]
