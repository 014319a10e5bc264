"""``ftp cache ls`` and ``ftp cache clear``: the tokenized-data cache."""

from __future__ import annotations

import json
import time
from typing import Any

import click


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


COMMANDS = [cache]
