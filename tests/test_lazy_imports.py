"""Listing, validating and describing never import the heavy libraries (measured, not assumed)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftp.testing import write_pipeline

HEAVY = {"torch", "transformers", "trl", "datasets", "peft", "accelerate"}

PIPELINE = """
[pipeline]
name = "lazy"

[model]
path = "smollm2-135m-instruct"

[data.x]
loader = "json"
path = "data.json"
format = "alpaca"
eval_fraction = 0.5

[[stages]]
method = "sft"
data = "x"
adapter = { r = 4 }

[[evaluate]]
evaluator = "loss"
data = "x"

[[evaluate]]
evaluator = "generate"
prompts = ["Who are you?"]
"""


def imported_modules(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``python -X importtime -m ftp ARGS``; return the result and every module imported."""
    env = {k: v for k, v in os.environ.items() if k not in ("FTP_PLUGINS", "FTP_DISABLE_PLUGINS")}
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "ftp", *args], cwd=cwd,
                            env=env, capture_output=True, text=True, timeout=120)
    modules = set()
    for line in result.stderr.splitlines():
        # "import time:  self [us] | cumulative | imported package", nesting shown by indent.
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                modules.add(name)
    return result, modules


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("lazy")
    rows = [{"instruction": "Who are you?", "output": "Nova."},
            {"instruction": "Hi", "output": "Hi"}]
    (folder / "data.json").write_text(json.dumps(rows), encoding="utf-8")
    write_pipeline(folder / "pipeline.toml", PIPELINE)
    write_pipeline(folder / "invalid.toml", PIPELINE.replace('method = "sft"', 'method = "x"'))
    # Local paths that do not exist: validate looks at the disk, still without torch.
    write_pipeline(folder / "missing.toml", PIPELINE.replace('"data.json"', '"nothere/*.json"')
                   .replace('"smollm2-135m-instruct"', '"./models/none"'))
    return folder


@pytest.mark.parametrize(("args", "code"), [
    (["--help"], 0),
    (["validate", "pipeline.toml"], 0),
    (["validate", "invalid.toml"], 2),
    (["validate", "missing.toml"], 2),
    (["plugins"], 0),
    (["plugins", "--json"], 0),
    (["schema"], 0),
    (["components", "--options"], 0),
])
def test_light_commands_do_not_import_heavy_libraries(
    project: Path, args: list[str], code: int
) -> None:
    result, modules = imported_modules(args, project)
    assert result.returncode == code, result.stderr[-2000:]
    # The measurement itself works: ftp was imported, and (for all but --help) the built-in
    # plugins ran. Entry points are imported through importlib, which -X importtime does not
    # log; the modules they import with `import` statements are logged.
    assert {"ftp", "ftp.cli", "click"} <= modules
    if args != ["--help"]:
        assert {"ftp_builtin.catalog", "ftp_builtin.methods.common",
                "ftp_builtin.tokenize"} <= modules
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert not heavy, f"`ftp {' '.join(args)}` imported {heavy[:10]}"


def test_the_parser_reads_importtime_output(project: Path) -> None:
    # The check above must be able to fail: a module imported by a statement is seen, nested
    # or not (torch would be caught the same way; json is cheaper to import).
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "import json"],
                            cwd=project, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    names = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
             if line.startswith("import time:") and line.count("|") == 2}
    assert {"json", "json.decoder", "json.scanner"} <= names


# importtime does not log modules imported through importlib (as entry points are), so the
# same commands are also checked against sys.modules as the process exits.
DUMP_AT_EXIT = """
import atexit, json, runpy, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv[0] = "ftp"
runpy.run_module("ftp", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("args", [
    ["--help"], ["validate", "pipeline.toml"], ["plugins"], ["schema"], ["components"],
])
def test_light_commands_leave_no_heavy_module_in_sys_modules(
    project: Path, tmp_path: Path, args: list[str]
) -> None:
    dump = tmp_path / "modules.json"
    env = {k: v for k, v in os.environ.items() if k not in ("FTP_PLUGINS", "FTP_DISABLE_PLUGINS")}
    result = subprocess.run([sys.executable, "-c", DUMP_AT_EXIT, str(dump), *args], cwd=project,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    modules = set(json.loads(dump.read_text()))
    assert {"ftp.cli", "ftp_builtin.data", "ftp_builtin.methods.sft"} <= modules
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert not heavy, f"`ftp {' '.join(args)}` imported {heavy[:10]}"
