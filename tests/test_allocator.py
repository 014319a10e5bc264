"""The commands that train run on jemalloc where it is installed, and say what they really ran on.

Through the real ``ftp`` command (a subprocess, as a user runs it): only such a process may
re-execute itself with jemalloc preloaded. Where jemalloc is not installed the tests that need
it skip, except under ``CI=true``, where they fail (``.ci/run`` installs libjemalloc2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftp.allocator import ENV, find_jemalloc
from ftp.testing import (
    data_section,
    one_line_error,
    require_tool,
    run_ftp,
    tiny_pipeline,
    toml_table,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

DATA = Path(__file__).parent / "data"


def pipeline(folder: Path, model: Path) -> Path:
    """Two SFT steps on the tiny model: enough to load a model and train."""
    return tiny_pipeline(
        folder / "pipeline.toml", model,
        data_section("identity", loader="json", path=DATA / "alpaca.json", format="alpaca",
                     placeholders={"name": "Nova", "author": "Northwind Labs"}),
        toml_table("[stages]", {"method": "sft", "data": "identity", "max_steps": 2,
                                "batch_size": 2}),
        name="allocator-test", seed=None)


def jemalloc() -> str:
    found = find_jemalloc()
    require_tool(found is not None, "jemalloc (apt-get install -y libjemalloc2)")
    assert found is not None
    return found


def run(tmp_path: Path, tiny_model: Path, **env: str) -> tuple[dict, str]:
    """`ftp run` the tiny pipeline with ``env``; environment.json's allocator and stdout."""
    # Not preloaded by whoever runs the tests: ftp's own choice is what is tested.
    proc = run_ftp("run", str(pipeline(tmp_path, tiny_model)), "-o", str(tmp_path / "run"),
                   cwd=tmp_path, LD_PRELOAD="", **env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    environment = json.loads((tmp_path / "run" / "environment.json").read_text())
    return environment["allocator"], proc.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux's")
def test_a_run_switches_to_jemalloc_where_installed(tiny_model, tmp_path):
    library = jemalloc()
    allocator, out = run(tmp_path, tiny_model, **{ENV: "auto"})
    # Read from the training process's own memory maps: really mapped, not only asked for.
    assert allocator["name"] == "jemalloc", allocator
    assert os.path.realpath(allocator["library"]) == os.path.realpath(library) or \
        os.path.basename(allocator["library"]).startswith("libjemalloc")
    assert allocator["switched"] is True and allocator["requested"] == "auto"
    assert "memory allocator: jemalloc\n" in out


def test_system_keeps_the_c_librarys_malloc(tiny_model, tmp_path):
    allocator, out = run(tmp_path, tiny_model, **{ENV: "system"})
    assert allocator["library"] is None and allocator["switched"] is False
    if sys.platform.startswith("linux"):
        assert allocator["name"] == "glibc malloc"
        assert f"memory allocator: glibc malloc ({ENV}=system)\n" in out


def test_a_missing_library_is_one_line_and_exit_2(tmp_path):
    # Checked before the pipeline is even read: the file need not exist either.
    line = one_line_error(run_ftp("run", "pipeline.toml", cwd=tmp_path,
                                  **{ENV: "/nonexistent/libjemalloc.so"}))
    assert line.startswith(f"error: {ENV}=/nonexistent/libjemalloc.so: no such library file")


@pytest.mark.parametrize("command", [("run", "pipeline.toml"), ("plan", "pipeline.toml"),
                                     ("models", "compare", "pipeline.toml"),
                                     ("resume", "run"), ("chat", "model", "--prompt", "hi"),
                                     ("export", "model", "--format", "gguf")])
def test_a_bad_value_names_the_variable(tmp_path, command):
    line = one_line_error(run_ftp(*command, cwd=tmp_path, **{ENV: "jemaloc"}))
    assert line == (f"error: {ENV}='jemaloc': expected auto, jemalloc, system or the path of "
                    "an allocator's .so file")


def test_commands_that_load_no_model_ignore_it(tiny_model, tmp_path):
    proc = run_ftp("validate", str(pipeline(tmp_path, tiny_model)), cwd=tmp_path,
                   **{ENV: "jemaloc"})
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux's")
def test_a_library_the_loader_refuses_stops_once_instead_of_looping(tmp_path):
    """The re-executed process is marked: when the loader ignored LD_PRELOAD it stops there."""
    fake = tmp_path / "libjemalloc.so.2"
    fake.write_text("not a shared library\n")
    proc = run_ftp("run", "pipeline.toml", cwd=tmp_path, timeout=60, LD_PRELOAD="",
                   **{ENV: str(fake)})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    # The dynamic loader's own complaint comes first, once; then ftp's one line.
    assert proc.stderr.count("cannot be preloaded") == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {ENV}={fake}: {fake} could not be preloaded (LD_PRELOAD); install jemalloc "
        "(apt install libjemalloc2, dnf install jemalloc or conda install jemalloc) or set "
        f"{ENV}=system")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux's")
def test_release_purges_jemalloc_and_trims_glibc():
    """`ftp.memory.trim` talks to the allocator the process really runs on."""
    code = ("from ftp.allocator import current; from ftp.memory import can_trim, trim; "
            "print(current().name, can_trim(), trim())")
    env = {**os.environ, "LD_PRELOAD": jemalloc()}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out == "jemalloc True True\n"  # mallctl("arena.4096.purge") accepted
    env["LD_PRELOAD"] = ""
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.startswith("glibc malloc True ")
