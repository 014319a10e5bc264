import sqlite3
from pathlib import Path

import pytest

# ftp's fixtures come from `-p ftp.pytest_plugin` in pyproject.toml's pytest options.

QUESTIONS = [
    ("What colour is the sky on a clear day?", "blue", None),
    ("How many legs does a spider have?", "eight", None),
    ("Which gas do plants take in?", "carbon dioxide", "Plants take in carbon dioxide."),
    ("What is frozen water called?", "ice", None),
    ("Which planet do we live on?", "Earth", "We live on the planet Earth."),
    ("What do bees make?", "honey", None),
]


@pytest.fixture
def qa_db(tmp_path: Path) -> Path:
    """A SQLite database with a `qa` table of six questions (two with a context)."""
    path = tmp_path / "qa.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE qa (question TEXT, answer TEXT, context TEXT)")
        db.executemany("INSERT INTO qa VALUES (?, ?, ?)", QUESTIONS)
    return path
