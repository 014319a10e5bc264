"""``ftp template ...``: the plugin's own commands."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import click


@click.group(name="template")
def command() -> None:
    """Commands of the template plugin."""


@command.command()
@click.argument("database", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def tables(database: Path) -> None:
    """List DATABASE's tables, their row counts and columns (for the sqlite loader)."""
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
            names = [r[0] for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            for name in names:
                count = db.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0]
                columns = [r[1] for r in db.execute(f'PRAGMA table_info("{name}")')]
                click.echo(f"{name}: {count} rows; columns: {', '.join(columns)}")
    except sqlite3.Error as exc:
        raise click.ClickException(f"{database}: {exc}") from None
    if not names:
        click.echo(f"{database}: no tables")
