"""``template-sqlite``: rows of a SQLite query, one record per row."""

from __future__ import annotations

import sqlite3
from typing import Any

from pydantic import Field

from ftp import DataLoader, LoadContext, StrictConfig, UserError


class SQLiteLoader(DataLoader):
    """Rows from a SQLite database: a table, or any read-only SELECT query."""

    name = "template-sqlite"

    class Config(StrictConfig):
        """Which database and which rows."""

        path: str = Field(description="The SQLite database file, relative to the pipeline file.")
        table: str | None = Field(None, description="Read every row of this table.")
        query: str | None = Field(
            None, description="Or run this SELECT query (the database is opened read-only)."
        )

    config: Config

    def load(self, ctx: LoadContext) -> list[dict[str, Any]]:
        """Run the query and return each row as a dict keyed by column name."""
        cfg = self.config
        if (cfg.table is None) == (cfg.query is None):
            raise UserError("give exactly one of table or query")
        path = ctx.resolve(cfg.path)
        if not path.is_file():
            raise UserError(f"database not found: {path}")
        sql = cfg.query or f'SELECT * FROM "{cfg.table}"'
        # mode=ro: a pipeline only reads its data; a query can never change the database.
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
                db.row_factory = sqlite3.Row
                rows = [dict(row) for row in db.execute(sql)]
        except sqlite3.Error as exc:
            raise UserError(f"{path}: {exc}") from None
        if not rows:
            raise UserError(f"{path}: the query returned no rows")
        return rows
