"""``ftp validate``, ``ftp run`` and ``ftp resume``: check a pipeline, run it, continue it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ftp.allocator import describe as describe_allocator
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
from ftp.cli.planning import budget_option
from ftp.errors import FtpError, RunError, UserError
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
@click.option("--nproc", type=click.IntRange(min=1), default=None, metavar="N",
              help="Train in N processes on this machine (DDP; [distributed] nproc_per_node).")
@click.option("--rehearse", is_flag=True,
              help="Rehearse: the whole pipeline on a tiny random model of the same "
              "architecture and tokenizer, 2 steps per stage, in 2 processes (or --nproc), "
              "into RUN_DIR.rehearsal, with a report (rehearsal.md).")
@debug_option
@allow_code_option
@pass_state
@reports_errors
def run(state: State, pipeline: Path, overrides: tuple[str, ...], output_dir: Path | None,
        overwrite: bool, from_stage: str | None, resume: bool, preflight: bool,
        memory_budget: float | None, nproc: int | None, rehearse: bool, debug: bool) -> None:
    """Run PIPELINE: load data and model, train each stage, evaluate, save."""
    prefer_allocator()  # first: it may start this command over with jemalloc
    if resume and (overwrite or from_stage):
        raise UserError("--resume continues the earlier run; it cannot be combined with "
                        f"{'--overwrite' if overwrite else '--from-stage'}")
    if nproc is not None:  # validated, recorded and replayed on resume like any --set
        overrides = (*overrides, f"distributed.nproc_per_node={nproc}")
    p = state.pipeline(pipeline, overrides, rehearsal=rehearse)
    if preflight and _is_main() and not _started_by_ftp():
        # Once: here, before a launch, or in rank 0 under the user's own launcher.
        from ftp.cli.planning import preflight as plan_first

        quiet_libraries(debug)
        if not plan_first(state, pipeline, overrides, memory_budget):
            click.echo("error: preflight: a stage will not fit (see the warnings above); "
                       "nothing was trained", err=True)
            sys.exit(1)
    from ftp.rundir import RunDir
    from ftp.runner import Runner, default_run_dir

    where = default_run_dir(p, str(output_dir) if output_dir else None)
    if rehearse:
        if resume or from_stage:
            raise UserError("--rehearse starts a new rehearsal; it cannot be combined with "
                            f"{'--resume' if resume else '--from-stage'}")
        if _launched_by_ftp():
            _rehearse_here(state, pipeline, where, debug)
        else:
            _rehearse(state, pipeline, p, overrides, where, nproc, debug)
        return
    if _launched_elsewhere(p, where):
        return
    if not _is_main():
        # The main process makes (or reopens) the folder; this one only reads it.
        runner = Runner(p, _follower(where), from_stage=from_stage, resume=resume,
                        overrides=overrides)
    elif from_stage is not None or resume:
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
    prefer_allocator()
    from ftp.rundir import RunDir
    from ftp.runner import Runner, refuse_rehearsal

    folder = RunDir.open_existing(run_dir)
    refuse_rehearsal(folder)  # before any launch: a rehearsal of 2 processes is refused once
    try:
        resolved = json.loads(folder.file("resolved.json").read_text(encoding="utf-8"))
        source = Path(resolved["source"])
    except (OSError, ValueError, KeyError):
        raise UserError(f"{run_dir}: resolved.json is missing or unreadable, so the pipeline "
                        f"file is unknown; use ftp run PIPELINE --output-dir {run_dir} "
                        "--resume") from None
    status = folder.status()
    overrides = tuple(status.get("overrides", []))
    if any(MASK in item for item in overrides):
        # A secret given with --set is masked in run.json: it cannot be replayed from there.
        raise UserError(f"{run_dir} was started with a --set value holding a secret, which ftp "
                        f"does not store; resume with: ftp run {source} --set ... "
                        f"--output-dir {run_dir} --resume")
    p = state.pipeline(source, overrides)
    processes = int(status.get("processes", 1))
    if processes > 1 and p.distributed is None:
        # Launched by hand (torchrun ... ftp run): resume with as many processes.
        overrides = (*overrides, f"distributed.nproc_per_node={processes}")
        p = state.pipeline(source, overrides)
    if _launched_elsewhere(p, run_dir):
        return
    if not _is_main():
        folder = _follower(run_dir)
    runner = Runner(p, folder, resume=True, overrides=overrides)
    _execute(runner, debug)


def _rehearse(state: State, source: Path, p: Any, overrides: tuple[str, ...], where: Path,
              nproc: int | None, debug: bool) -> None:
    """Run ``p``'s rehearsal into ``where.rehearsal`` and write its report.

    With several processes, the tiny model and the rehearsal's overrides are made here, once;
    the launched processes read them from `ftp.rehearsal.PLAN_FILE` (`_rehearse_here`).
    """
    from ftp import rehearsal
    from ftp.distributed.ranks import launched
    from ftp.rundir import RunDir

    if launched():
        raise UserError("--rehearse starts its own processes; run it without torchrun, srun "
                        "or accelerate launch")
    quiet_libraries(debug)
    # ftp's own folder: replaced by every rehearsal (and only if ftp wrote it).
    run_dir = RunDir.create(rehearsal.rehearsal_dir(where), overwrite=True)
    procs = rehearsal.processes(p, nproc)
    click.echo(f"ftp: rehearsing {p.name!r} on a tiny random model of the same architecture, "
               f"in {procs.count} process(es)")
    options, model_line = p.model.build().rehearsal_model(run_dir.file(rehearsal.MODEL_DIR))
    every = (*overrides, *rehearsal.overrides(p, options, procs.count))
    rehearsed = rehearsal.on_cpu(state.pipeline(source, every, rehearsal=True))
    run_dir.write_json(rehearsal.PLAN_FILE, {"overrides": list(every), "user": list(overrides)})
    code = 0
    try:
        if procs.count > 1:
            code = _launch_rehearsal(rehearsed, run_dir.path)
        else:
            _execute(_rehearsal_runner(source, rehearsed, run_dir, overrides), debug,
                     gates=False)
    finally:
        status = run_dir.status()
        failed = status.get("status") != "finished"
        error = str(status.get("error") or status.get("status") or "").splitlines()
        run_dir.set_status(str(status.get("status", "failed")), rehearsal=True)
        report = run_dir.write_text(rehearsal.REPORT, rehearsal.report(
            rehearsed, model_line, status, error[0] if failed and error else "", procs,
            run_dir.read_json("results.json")))  # {} when a run failed before writing it
        click.echo(f"rehearsal {'FAILED' if failed else 'passed'}: {report}",
                   err=failed)
    if code:
        sys.exit(code)


def _launch_rehearsal(rehearsed: Any, run_dir: Path) -> int:
    """Start the rehearsal's processes (each runs `_rehearse_here`); their exit code."""
    from ftp.distributed.launch import launch
    from ftp.errors import RanksStopped

    try:
        return launch(rehearsed, sys.argv[1:])
    except RanksStopped as exc:
        from ftp.rundir import RunDir

        RunDir(run_dir).set_status("failed", error=str(exc))
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code


def _rehearse_here(state: State, source: Path, where: Path, debug: bool) -> None:
    """One launched process of a rehearsal: train what the launching process prepared."""
    from ftp import rehearsal
    from ftp.rundir import RunDir

    folder = rehearsal.rehearsal_dir(where)
    plan = json.loads((folder / rehearsal.PLAN_FILE).read_text(encoding="utf-8"))
    rehearsed = rehearsal.on_cpu(state.pipeline(source, tuple(plan["overrides"]),
                                                rehearsal=True))
    run_dir = RunDir(folder) if _is_main() else _follower(folder)
    _execute(_rehearsal_runner(source, rehearsed, run_dir, tuple(plan["user"])), debug,
             gates=False)


def _rehearsal_runner(source: Path, pipeline: Any, run_dir: Any,
                      overrides: tuple[str, ...]) -> Any:
    """A runner for a rehearsal: evaluations capped, and rerun (never resumed) when it fails."""
    from ftp import rehearsal
    from ftp.runner import Runner

    class Rehearsal(Runner):
        eval_rows = rehearsal.EVAL_ROWS

        def resume_command(self) -> str:
            return f"ftp run {source} --rehearse"  # a rehearsal is rerun, never resumed

    return Rehearsal(pipeline, run_dir, overrides=overrides)


def _launched_by_ftp() -> bool:
    """Whether ftp's own launch started this process (a process of a rehearsal, say)."""
    from ftp.distributed.ranks import launched

    return _started_by_ftp() and launched()


def _started_by_ftp() -> bool:
    import os

    from ftp.distributed.ranks import LAUNCHED_ENV

    return bool(os.environ.get(LAUNCHED_ENV))


def _is_main() -> bool:
    from ftp.distributed.ranks import here

    return here().is_main


def _follower(where: Path) -> Any:
    from ftp.distributed.followers import FollowerRunDir

    return FollowerRunDir(where)


def _launched_elsewhere(pipeline: Any, run_dir: Path) -> bool:
    """With several processes to start: launch them on this command line, wait, and say so.

    Returns:
        False when this process trains the pipeline itself; True after a launch that
        succeeded (a failed one ends the process with its exit code).

    """
    from ftp.distributed.launch import launch, plan_for

    if plan_for(pipeline) is None:
        return False
    from ftp.errors import RanksStopped
    from ftp.rundir import RunDir

    try:
        code = launch(pipeline, sys.argv[1:])
    except RanksStopped as exc:
        folder = RunDir(run_dir)
        if folder.file("run.json").is_file():
            folder.set_status("failed", error=str(exc),
                              resume=f"ftp resume {run_dir.absolute()}")
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    if code:
        sys.exit(code)  # the process that failed said why
    return True


def _execute(runner: Any, debug: bool, gates: bool = True) -> None:
    """Run, and end the process with the exit code the outcome calls for.

    ``gates=False`` (a rehearsal): requirements are judged and recorded, but a random model
    failing them does not fail the process.
    """
    from ftp.signals import Interrupted

    quiet_libraries(debug)
    run_dir = runner.run_dir.path
    if not runner.main:
        # Only the main process speaks; the others say something only when they fail.
        _run_quietly(runner, debug)
        return
    click.echo(f"ftp: running {runner.pipeline.name!r} into {run_dir}")
    click.echo(describe_allocator())
    try:
        results = runner.run()
    except FtpError as exc:
        from ftp.distributed.ranks import reported_by_launcher

        if reported_by_launcher(exc):
            sys.exit(exc.exit_code)  # ftp's launcher names the process that died
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
    if gates:
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


def _run_quietly(runner: Any, debug: bool) -> None:
    """Run in a process other than the main one: its output is the main process's, again."""
    import contextlib
    import os

    from ftp.signals import Interrupted

    with open(os.devnull, "w", encoding="utf-8") as devnull, \
            contextlib.redirect_stdout(sys.stdout if debug else devnull):
        try:
            runner.run()
        except FtpError as exc:
            from ftp.distributed.ranks import reported_by_launcher

            if reported_by_launcher(exc):
                sys.exit(exc.exit_code)
            kind = UserError if isinstance(exc, UserError) else RunError
            raise kind(f"rank {runner.place.rank}: {exc}") from exc
        except Interrupted as exc:
            sys.exit(exc.exit_code)


COMMANDS = [validate, run, resume]
