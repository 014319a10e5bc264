"""``ftp report`` and ``ftp compare``: a run's report.html, and one page comparing runs.

Both read only the run folders' files (``ftp.report``): neither imports torch.
"""

from __future__ import annotations

from pathlib import Path

import click

from ftp.cli.common import reports_errors


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@reports_errors
def report(run_dir: Path) -> None:
    """Write (or rebuild) RUN_DIR/report.html from the run folder's files."""
    from ftp.report import write_report

    click.echo(f"report: {write_report(run_dir)}")


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(path_type=Path), default=Path("compare.html"),
              show_default=True, help="The page to write.")
@reports_errors
def compare(run_dirs: tuple[Path, ...], output: Path) -> None:
    """Compare runs on one page: settings that differ, metrics, curves overlaid."""
    from ftp.report import write_comparison

    click.echo(f"comparison: {write_comparison(list(run_dirs), output)}")


COMMANDS = [report, compare]
