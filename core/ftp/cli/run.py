"""``ftp validate``, ``ftp run`` and ``ftp resume``: check a pipeline, run it, continue it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

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
from ftp.cli.planning import budget_option
from ftp.errors import FtpError, UserError
from ftp.masking import MASK


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
@click.option("--resume", is_flag=True,
              help="Continue a failed, interrupted or killed run in the run directory from its "
              "newest good checkpoint or first unfinished step.")
@click.option("--preflight", is_flag=True,
              help="First probe every stage (as ftp plan does); stop with exit 1, before "
              "anything trains, when one will not fit the memory budget.")
@budget_option
@debug_option
@allow_code_option
@pass_state
@reports_errors
def run(state: State, pipeline: Path, overrides: tuple[str, ...], output_dir: Path | None,
        overwrite: bool, from_stage: str | None, resume: bool, preflight: bool,
        memory_budget: float | None, debug: bool) -> None:
    """Run PIPELINE: load data and model, train each stage, evaluate, save."""
    if resume and (overwrite or from_stage):
        raise UserError("--resume continues the earlier run; it cannot be combined with "
                        f"{'--overwrite' if overwrite else '--from-stage'}")
    p = state.pipeline(pipeline, overrides)
    if preflight:
        from ftp.cli.planning import preflight as plan_first

        quiet_libraries(debug)
        if not plan_first(state, pipeline, overrides, memory_budget):
            click.echo("error: preflight: a stage will not fit (see the warnings above); "
                       "nothing was trained", err=True)
            sys.exit(1)
    from ftp.rundir import RunDir
    from ftp.runner import Runner, default_run_dir

    where = default_run_dir(p, str(output_dir) if output_dir else None)
    if from_stage is not None or resume:
        if overwrite:
            raise UserError("--from-stage keeps the earlier run; it cannot be combined "
                            "with --overwrite")
        run_dir = RunDir.open_existing(where)
        runner = Runner(p, run_dir, from_stage=from_stage, resume=resume, overrides=overrides)
    else:
        run_dir = RunDir.create(where, overwrite=overwrite)
        runner = Runner(p, run_dir, overrides=overrides)
    _execute(runner, debug)


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@debug_option
@allow_code_option
@pass_state
@reports_errors
def resume(state: State, run_dir: Path, debug: bool) -> None:
    """Continue the failed, interrupted or killed run in RUN_DIR where it stopped.

    The run's own pipeline file (the path it was started from) and --set values are used.
    """
    from ftp.rundir import RunDir
    from ftp.runner import Runner

    folder = RunDir.open_existing(run_dir)
    try:
        resolved = json.loads(folder.file("resolved.json").read_text(encoding="utf-8"))
        source = Path(resolved["source"])
    except (OSError, ValueError, KeyError):
        raise UserError(f"{run_dir}: resolved.json is missing or unreadable, so the pipeline "
                        f"file is unknown; use ftp run PIPELINE --output-dir {run_dir} "
                        "--resume") from None
    overrides = tuple(folder.status().get("overrides", []))
    if any(MASK in item for item in overrides):
        # A secret given with --set is masked in run.json: it cannot be replayed from there.
        raise UserError(f"{run_dir} was started with a --set value holding a secret, which ftp "
                        f"does not store; resume with: ftp run {source} --set ... "
                        f"--output-dir {run_dir} --resume")
    runner = Runner(state.pipeline(source, overrides), folder, resume=True, overrides=overrides)
    _execute(runner, debug)


def _execute(runner: Any, debug: bool) -> None:
    """Run, and end the process with the exit code the outcome calls for."""
    from ftp.signals import Interrupted

    quiet_libraries(debug)
    run_dir = runner.run_dir.path
    click.echo(f"ftp: running {runner.pipeline.name!r} into {run_dir}")
    try:
        results = runner.run()
    except FtpError:
        if runner.run_dir.status().get("status") == "failed":
            click.echo(f"run directory (kept, marked failed): {run_dir}", err=True)
        raise
    except Interrupted as exc:
        status = runner.run_dir.status()
        where = f"checkpoint {status['checkpoint']}" if status.get("checkpoint") else \
            "no checkpoint"
        click.echo(f"{exc}: run directory marked interrupted ({where}); continue with: "
                   f"{runner.resume_command()}", err=True)
        sys.exit(exc.exit_code)
    click.echo(f"done: {run_dir} (results.json, report.html, summary.md, model/)")
    _exit_on_failed_requirements(results)


def _exit_on_failed_requirements(results: dict[str, Any]) -> None:
    """Exit with the gates' own code when a ``require`` failed; the run itself is saved."""
    from ftp.gates import EXIT_CODE, describe

    failed = [r for r in results.get("requirements") or [] if not r.get("passed")]
    if not failed:
        return
    click.echo(f"error: {len(failed)} requirement(s) failed:", err=True)
    for record in failed:
        click.echo(f"  {describe(record)}", err=True)
    sys.exit(EXIT_CODE)


COMMANDS = [validate, run, resume]
