"""``ftp.jsonfiles.read_json_object``: what a run or model folder holds, or nothing; no error."""

from pathlib import Path

from ftp.jsonfiles import read_json_object
from ftp.rundir import RunDir


def test_an_object_is_read_and_anything_else_is_an_empty_dict(tmp_path: Path) -> None:
    (tmp_path / "whole.json").write_text('{"status": "done", "steps": 3}', encoding="utf-8")
    (tmp_path / "half.json").write_text('{"status": "runn', encoding="utf-8")
    (tmp_path / "list.json").write_text("[1, 2]", encoding="utf-8")
    (tmp_path / "folder.json").mkdir()
    assert read_json_object(tmp_path / "whole.json") == {"status": "done", "steps": 3}
    for name in ("half.json", "list.json", "folder.json", "missing.json"):
        assert read_json_object(tmp_path / name) == {}, name


def test_a_run_folder_reads_its_files_the_same_way(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text('{"status": "runn', encoding="utf-8")
    (tmp_path / "results.json").write_text('{"training": {}}', encoding="utf-8")
    run = RunDir(tmp_path)
    assert run.status() == {}
    assert run.read_json("results.json") == {"training": {}}
