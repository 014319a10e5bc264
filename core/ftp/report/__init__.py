"""Run reports: ``report.html`` in a run folder, and one page comparing runs.

Built only from the files a run folder holds (``ftp.report.runfiles``), so a report can be
rebuilt for any run, including failed ones and ones older than reports; standard library only
(no torch), charts are inline SVG drawn here (``ftp.report.svg``), no script, no server: the
page opens from disk.

- `write_report`: ``RUN_DIR/report.html`` (the runner writes it at the end of every run;
  ``ftp report RUN_DIR`` rebuilds it).
- `write_comparison`: ``ftp compare RUN_A RUN_B ...``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ftp.errors import UserError
from ftp.report.compare import render_comparison
from ftp.report.html import GENERATOR
from ftp.report.runfiles import RunFiles
from ftp.report.single import render_report

REPORT_FILE = "report.html"

__all__ = ["REPORT_FILE", "write_comparison", "write_report"]


def _write(target: Path, text: str) -> Path:
    """Write atomically, so a browser never opens half a page."""
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
    return target


def _run_folder(path: Path) -> RunFiles:
    if not path.is_dir():
        raise UserError(f"{path} is not a folder (give a run folder, e.g. runs/NAME)")
    if not (path / "run.json").is_file() and not (path / "results.json").is_file():
        raise UserError(f"{path} holds no ftp run (no run.json or results.json)")
    return RunFiles.read(path)


def write_report(run_dir: Path) -> Path:
    """Write ``run_dir/report.html`` from the run folder's files; return its path.

    Raises:
        UserError: when ``run_dir`` is not a run folder.

    """
    return _write(run_dir / REPORT_FILE, render_report(_run_folder(run_dir)))


def write_comparison(run_dirs: Sequence[Path], output: Path) -> Path:
    """Write one page comparing the runs in ``run_dirs`` to ``output``; return its path.

    Raises:
        UserError: when fewer than two runs are given, or one is not a run folder.

    """
    if len(run_dirs) < 2:
        raise UserError("ftp compare needs at least two run folders")
    runs = [_run_folder(Path(p)) for p in run_dirs]
    if output.is_dir():
        raise UserError(f"{output} is a folder; give a file name, e.g. -o {output}/compare.html")
    if output.exists() and GENERATOR not in output.read_text(encoding="utf-8", errors="replace"):
        raise UserError(f"{output} exists and was not written by ftp; it is left as it is. "
                        "Choose another file with -o")
    output.parent.mkdir(parents=True, exist_ok=True)
    return _write(output, render_comparison(runs))
