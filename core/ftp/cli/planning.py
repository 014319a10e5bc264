"""``ftp plan`` and ``ftp models compare``: what a run will cost, and which model to train.

The work is in `ftp.planning`; these commands parse options and print.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ftp.allocator import prefer as prefer_allocator
from ftp.cli.common import (
    State,
    allow_code_option,
    debug_option,
    pass_state,
    quiet_libraries,
    reports_errors,
    set_option,
)
from ftp.errors import UserError

#: ``--memory-budget GB``: what a run may use (default: the device's memory).
budget_option = click.option(
    "--memory-budget", "memory_budget", type=float, default=None, metavar="GB",
    help="Memory a stage may use, in GiB (default: the GPU's memory, else the machine's RAM).")


def preflight(state: State, pipeline_path: Path, overrides: tuple[str, ...],
              memory_budget: float | None, json_out: bool = False) -> bool:
    """Plan the pipeline, print the plan, and say whether every stage fits."""
    from ftp.planning.plan import make_plan, render_plan
    from ftp.planning.stages import Invocation

    p = state.pipeline(pipeline_path, overrides)
    invocation = Invocation(pipeline_path, list(overrides), state.plugin_opts, state.only,
                            state.allow_code)
    plan = make_plan(p, invocation, memory_budget,
                     say=lambda line: click.echo(f"plan: {line}", err=True))
    if json_out:
        click.echo(json.dumps(plan.as_dict(), indent=2))
    else:
        for line in render_plan(plan):
            click.echo(line)
    for problem in plan.problems:
        click.echo(f"warning: {problem}", err=True)
    return plan.fits


@click.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@set_option
@budget_option
@click.option("--json", "json_out", is_flag=True, help="Print the plan as JSON.")
@debug_option
@allow_code_option
@pass_state
@reports_errors
def plan(state: State, pipeline: Path, overrides: tuple[str, ...], memory_budget: float | None,
         json_out: bool, debug: bool) -> None:
    """Per stage of PIPELINE: peak memory and s/step from steps on its longest batch, ETA.

    Exits 1 when a stage will not fit the memory budget (or could not be probed).
    """
    prefer_allocator()  # first: it may start this command over with jemalloc
    quiet_libraries(debug)
    if not preflight(state, pipeline, overrides, memory_budget, json_out):
        sys.exit(1)


@click.group()
def models() -> None:
    """Choose a base model: compare candidates on the pipeline's own data."""


@models.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.option("--candidate", "candidates", multiple=True, metavar="NAME_OR_PATH",
              help="A model to compare: catalog name, folder, Hub id, .gguf file, or a "
              "config.json alone (estimates only). Repeatable; default: [model] candidates.")
@set_option
@budget_option
@click.option("--pilot", type=int, default=0, metavar="N",
              help="Also train N steps per candidate and measure the held-out loss after.")
@click.option("--output-dir", "-o", type=click.Path(path_type=Path), default=None,
              help="Where report.md, report.json and candidates.png go "
              "(default: runs/NAME-compare).")
@debug_option
@allow_code_option
@pass_state
@reports_errors
def compare(state: State, pipeline: Path, candidates: tuple[str, ...],
            overrides: tuple[str, ...], memory_budget: float | None, pilot: int,
            output_dir: Path | None, debug: bool) -> None:
    """Compare candidate base models for PIPELINE's first stage, and recommend one.

    Per candidate: size, fit to the data, held-out loss, memory and time; written to
    report.md, report.json and candidates.png.
    """
    prefer_allocator()
    from ftp.planning.compare import compare_candidates

    if pilot < 0:
        raise UserError("--pilot: give a number of steps, 1 or more")
    p = state.pipeline(pipeline, overrides)
    names = list(candidates) or list(p.file.model.candidates)
    if not names:
        raise UserError("no candidates: give --candidate NAME_OR_PATH (repeatable) or "
                        "[model] candidates = [...] in the pipeline")
    quiet_libraries(debug)
    folder = output_dir or Path("runs") / f"{p.name}-compare"
    report = compare_candidates(state, pipeline, overrides, names, memory_budget, pilot,
                                folder, say=lambda line: click.echo(f"compare: {line}",
                                                                    err=True))
    for line in report.table_lines():
        click.echo(line)
    click.echo("")
    click.echo(report.recommendation_line())
    click.echo(f"report: {folder / 'report.md'}, {folder / 'report.json'}, "
               f"{folder / 'candidates.png'}")


COMMANDS = [plan, models]
