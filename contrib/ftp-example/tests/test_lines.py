"""Tests of the ``lines`` loader, run against an installed ftp-example (``pip install .``).

The command-line tests run ``python -m ftp`` in a subprocess, exactly as a user would, so
they also check that the entry point is registered and the plugin loads.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftp import LoadContext, UserError
from ftp.testing import make_tiny_causal_lm, write_pipeline

# These tests are of the installed distribution, as a user has it.
ftp_example = pytest.importorskip(
    "ftp_example", reason="ftp-example is not installed: pip install ./contrib/ftp-example",
    exc_type=ModuleNotFoundError,
)
LinesLoader = ftp_example.LinesLoader

os.environ["HF_HUB_OFFLINE"] = "1"

NOTES = """\
Tea is brewed from the leaves of Camellia sinensis.
Green tea is not oxidised.

Black tea is fully oxidised,
which gives it a darker colour.

ok

Oolong sits between green and black.
"""


def ftp(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("FTP_DISABLE_PLUGINS", None)
    return subprocess.run([sys.executable, "-m", "ftp", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def load(tmp_path: Path, **options) -> list[dict]:
    loader = LinesLoader(LinesLoader.Config(**options))
    return loader.load(LoadContext(dataset="notes", base_dir=tmp_path))


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "notes.txt"
    path.parent.mkdir()
    path.write_text(NOTES, encoding="utf-8")
    return path


def pipeline(tmp_path: Path, model: str = "unused", options: str = 'mode = "paragraph"') -> Path:
    return write_pipeline(tmp_path / "pipeline.toml", f"""
        [pipeline]
        name = "notes"

        [model]
        path = "{model}"

        [data.notes]
        loader = "lines"
        path = "data/notes.txt"
        {options}
        format = "text"

        [[stages]]
        method = "sft"
        data = "notes"
        max_steps = 2
        batch_size = 2
        max_length = 64
        logging_steps = 1
    """)


# -- the component on its own -------------------------------------------------------------


def test_line_mode_skips_blank_lines_and_trims(tmp_path, notes):
    rows = load(tmp_path, path="data/notes.txt")
    assert rows[0] == {"text": "Tea is brewed from the leaves of Camellia sinensis."}
    assert [r["text"] for r in rows][-2:] == ["ok", "Oolong sits between green and black."]
    assert len(rows) == 6


def test_paragraph_mode_splits_at_blank_lines(tmp_path, notes):
    rows = load(tmp_path, path="data/notes.txt", mode="paragraph")
    assert [r["text"] for r in rows] == [
        "Tea is brewed from the leaves of Camellia sinensis.\nGreen tea is not oxidised.",
        "Black tea is fully oxidised,\nwhich gives it a darker colour.",
        "ok",
        "Oolong sits between green and black.",
    ]


def test_paragraph_mode_treats_whitespace_only_lines_and_crlf_as_blank(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"one\r\ntwo\r\n  \t\r\n\r\nthree\r\n")
    rows = load(tmp_path, path="a.txt", mode="paragraph")
    assert rows == [{"text": "one\ntwo"}, {"text": "three"}]


def test_file_mode_is_one_record_per_file(tmp_path, notes):
    rows = load(tmp_path, path="data/notes.txt", mode="file")
    assert rows == [{"text": NOTES.strip()}]


def test_file_mode_over_a_folder_reads_matching_files_in_name_order(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "b.txt").write_text("second\n")
    (folder / "a.txt").write_text("first\n\nstill first\n")
    (folder / "c.md").write_text("not matched\n")
    assert load(tmp_path, path="docs", mode="file") == [
        {"text": "first\n\nstill first"}, {"text": "second"}]
    assert load(tmp_path, path="docs", mode="file", glob="*.md") == [{"text": "not matched"}]


def test_min_chars_and_field(tmp_path, notes):
    rows = load(tmp_path, path="data/notes.txt", mode="paragraph", min_chars=3, field="body")
    assert len(rows) == 3
    assert all(set(r) == {"body"} for r in rows)


def test_byte_order_mark_is_not_part_of_the_text(tmp_path):
    (tmp_path / "bom.txt").write_bytes("\ufeffhello\n".encode())
    assert load(tmp_path, path="bom.txt") == [{"text": "hello"}]


def test_problems_are_user_errors_naming_the_file(tmp_path):
    with pytest.raises(UserError, match="data file not found: .*missing.txt"):
        load(tmp_path, path="missing.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match="latin1.txt: not UTF-8"):
        load(tmp_path, path="latin1.txt")
    (tmp_path / "short.txt").write_text("a\nbb\n")
    with pytest.raises(UserError, match=r"no text documents \(2 shorter than min_chars = 5\)"):
        load(tmp_path, path="short.txt", min_chars=5)


# -- through the ftp command line ---------------------------------------------------------


def test_plugin_is_installed_and_registers_lines(tmp_path):
    out = ftp("plugins", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    plugins = {p["name"]: p for p in json.loads(out.stdout)}
    example = plugins["example"]
    assert example["status"] == "ok"
    assert example["distribution"] == "ftp-example"
    assert example["components"] == [{"kind": "data_loader", "name": "lines"}]


def test_components_lists_lines_with_its_options(tmp_path):
    out = ftp("components", "loader", "--options", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "lines" in out.stdout and "[example]" in out.stdout
    assert "mode: 'line' | 'paragraph' | 'file' = 'line'" in out.stdout


def test_plugin_can_be_blocked(tmp_path):
    out = ftp("-p", "no:example", "plugins", "--json", cwd=tmp_path)
    plugins = {p["name"]: p for p in json.loads(out.stdout)}
    assert plugins["example"]["status"] == "blocked"


def test_validate_accepts_a_lines_pipeline(tmp_path, notes):
    out = ftp("validate", str(pipeline(tmp_path)), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "ok" in out.stdout


def test_validate_reports_bad_options_with_their_toml_path(tmp_path, notes):
    path = pipeline(tmp_path, options='min_char = 3\nmode = "sentence"')
    out = ftp("validate", str(path), cwd=tmp_path)
    assert out.returncode == 2
    assert "2 problems" in out.stderr
    assert "data.notes.min_char: unknown key (did you mean 'min_chars'?)" in out.stderr
    assert "data.notes.mode: Input should be 'line', 'paragraph' or 'file'" in out.stderr


def test_run_sft_on_a_text_file(tmp_path, notes):
    model = make_tiny_causal_lm(tmp_path / "m")
    out = ftp("run", str(pipeline(tmp_path, model=str(model))), "-o", str(tmp_path / "run"),
              cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    run = tmp_path / "run"
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    data = json.loads((run / "data.json").read_text())["notes"]
    assert data["loader"] == "lines" and data["rows"] == 4
    assert data["source_sha256"]
    assert (run / "model" / "config.json").is_file()


def test_plugin_uses_only_ftps_public_api():
    import ast

    import ftp

    for source in Path(ftp_example.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ftp"):
                if node.module == "ftp":
                    assert {a.name for a in node.names} <= set(ftp.__all__), source
                else:
                    assert node.module.startswith("ftp_example"), (source, node.module)
