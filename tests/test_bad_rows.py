"""Bad rows: by default one line naming file, line and reason; with on_bad_rows = "skip",
left out and counted by reason — never silently."""

import json
import re
from pathlib import Path

import pytest

from ftp import LoadContext, UserError
from ftp.config import load_pipeline
from ftp.data import load_records, prepare
from ftp.testing import plugin_set, run_cli, run_ftp, write_pipeline

GOOD = {"instruction": "Say hi.", "input": "", "output": "Hi."}
LATIN1 = "caf\xe9".encode("latin-1")  # not UTF-8


def jsonl(*lines: str | bytes) -> bytes:
    return b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines)


def good(n: int = 1) -> list[str]:
    return [json.dumps(GOOD)] * n


# name: (file name, content, loader/format lines, where, reason) — the bad row is always the
# second row of its file, after a good one; two more good rows follow.
CASES = {
    "invalid JSON": ("x.jsonl", jsonl(*good(), '{"instruction": "a",', *good(2)),
                     'loader = "json"\nformat = "alpaca"', "x.jsonl:2", "invalid JSON"),
    "undecodable bytes": ("x.jsonl", jsonl(*good(), b'{"instruction": "' + LATIN1 + b'"}',
                                           *good(2)),
                          'loader = "json"\nformat = "alpaca"', "x.jsonl:2",
                          r"undecodable bytes \(not UTF-8\)"),
    "undecodable bytes in CSV": ("x.csv", b"instruction,output\nq,a\nq," + LATIN1
                                 + b"\nq,a\nq,a\n", 'loader = "csv"\nformat = "alpaca"',
                                 "x.csv:3", r"undecodable bytes \(not UTF-8\)"),
    "not an object": ("x.json", json.dumps([GOOD, ["a", "list"], GOOD, GOOD]).encode(),
                      'loader = "json"\nformat = "alpaca"', r"x.json:1 \(item 1\)",
                      "not an object"),
    "missing field": ("x.jsonl", jsonl(*good(), json.dumps({"instruction": "q"}), *good(2)),
                      'loader = "json"\nformat = "alpaca"', "x.jsonl:2",
                      "missing field 'output'"),
    "wrong type": ("x.jsonl", jsonl(*good(), json.dumps({**GOOD, "output": 7}), *good(2)),
                   'loader = "json"\nformat = "alpaca"', "x.jsonl:2",
                   "field 'output' should be text, got int"),
    "empty text": ("x.jsonl", jsonl(json.dumps({"text": "fine"}), json.dumps({"text": "  "}),
                                    json.dumps({"text": "ok"}), json.dumps({"text": "also"})),
                   'loader = "json"\nformat = "text"', "x.jsonl:2", "empty text in 'text'"),
    "CSV row with too many fields": ("x.csv", b"instruction,output\nq,a\nq,a,extra\nq,a\nq,a\n",
                                     'loader = "csv"\nformat = "alpaca"', "x.csv:3",
                                     "more fields than the header"),
    "CSV row with too few fields": ("x.csv", b"instruction,output\nq,a\nq\nq,a\nq,a\n",
                                    'loader = "csv"\nformat = "alpaca"', "x.csv:3",
                                    "fewer fields than the header"),
}


def make(tmp_path: Path, case: str, model: str, extra: str = "") -> Path:
    name, content, loader, _, _ = CASES[case]
    (tmp_path / name).write_bytes(content)
    method = "cpt" if 'format = "text"' in loader else "sft"
    return write_pipeline(tmp_path / "pipeline.toml", f"""
        [pipeline]
        name = "bad-rows"

        [model]
        path = {json.dumps(model)}

        [data.d]
        {loader.replace(chr(10), chr(10) + "        ")}
        path = "{name}"
        {extra}

        [[stages]]
        method = "{method}"
        data = "d"
        max_steps = 1
        batch_size = 2
    """)


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_row_stops_the_run_naming_file_line_and_reason(tmp_path, case):
    _, _, _, where, reason = CASES[case]
    # Data is read before any model: the run stops at the bad row, the model is never needed.
    # (A Hub id, which validation cannot look up offline; a missing local folder it would.)
    path = make(tmp_path, case, model="nobody/no-model-needed")
    result = run_cli("run", str(path), "--output-dir", str(tmp_path / "run"))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.output
    assert re.search(f"{where}: {reason}", errors[0]), errors[0]
    assert 'on_bad_rows = "skip"' in errors[0]  # says how to go on


@pytest.mark.parametrize("case", list(CASES))
def test_skip_leaves_the_bad_row_out_and_counts_it_by_reason(tmp_path, case):
    _, _, _, _, reason = CASES[case]
    path = make(tmp_path, case, model="unused", extra='on_bad_rows = "skip"')
    ds = load_pipeline(path, plugin_set()).datasets["d"]
    d = prepare(ds, load_records(ds, tmp_path, 1), tmp_path, 1)
    assert len(d.train) == 3
    assert d.skipped == {reason.replace("\\", ""): 1}
    assert d.fingerprint["skipped"] == d.skipped
    assert any("skipped 1 bad row: 1 " in w for w in d.warnings), d.warnings


def test_skip_counts_several_reasons_and_the_rows_read(tmp_path):
    lines = [*good(), "not json", json.dumps({"instruction": "q"}), "[1]", "also not json",
             json.dumps({"instruction": "q", "input": ""}), *good(3)]
    (tmp_path / "x.jsonl").write_text("\n".join(lines) + "\n")
    path = write_pipeline(tmp_path / "p.toml", """
        [pipeline]
        name = "p"
        [model]
        path = "unused"
        [data.d]
        loader = "json"
        path = "x.jsonl"
        format = "alpaca"
        on_bad_rows = "skip"
        [[stages]]
        method = "sft"
        data = "d"
    """)
    ds = load_pipeline(path, plugin_set()).datasets["d"]
    d = prepare(ds, load_records(ds, tmp_path, 1), tmp_path, 1)
    assert d.skipped == {"invalid JSON": 2, "missing field 'output'": 2, "not an object": 1}
    assert d.fingerprint["rows"] == 6  # rows the loader returned; 2 of them the format refused
    assert len(d.train) == 4
    assert ("data.d: skipped 5 bad rows: 2 invalid JSON, 2 missing field 'output', "
            '1 not an object (on_bad_rows = "skip")') in d.warnings


def test_a_file_of_nothing_but_bad_rows_is_an_error_even_when_skipping(tmp_path):
    (tmp_path / "x.jsonl").write_text("nope\nnor this\n")
    ctx = LoadContext("d", tmp_path, on_bad_rows="skip")
    from ftp_builtin.data import JsonLoader

    assert JsonLoader(JsonLoader.Config(path="x.jsonl")).load(ctx) == []
    assert ctx.skipped == {"invalid JSON": 2}
    path = make(tmp_path, "invalid JSON", "unused", 'on_bad_rows = "skip"')
    (tmp_path / "x.jsonl").write_text("nope\nnor this\n")
    ds = load_pipeline(path, plugin_set()).datasets["d"]
    with pytest.raises(UserError, match=r"no rows \(all 2 were bad rows, skipped\)"):
        load_records(ds, tmp_path, 1)


def test_a_third_party_loader_reports_bad_rows_through_the_context(tmp_path):
    from ftp import DataLoader

    class Numbers(DataLoader):
        name = "numbers"

        def load(self, ctx):
            rows = []
            for i, value in enumerate(["1", "two", "3"]):
                if not value.isdigit():
                    ctx.bad_row(f"numbers#{i}", "not a number", repr(value))
                    continue
                rows.append(ctx.origin({"text": value}, f"numbers#{i}"))
            return rows

    with pytest.raises(UserError, match=r"^numbers#1: not a number \('two'\)"):
        Numbers().load(LoadContext("d", tmp_path))
    ctx = LoadContext("d", tmp_path, on_bad_rows="skip")
    rows = Numbers().load(ctx)
    assert [r["text"] for r in rows] == ["1", "3"] and ctx.skipped == {"not a number": 1}
    assert ctx.where(rows[1]) == "numbers#2"


def test_skipped_rows_reach_the_terminal_and_data_json(tmp_path, tiny_model):
    path = make(tmp_path, "missing field", str(tiny_model), 'on_bad_rows = "skip"')
    result = run_cli("run", str(path), "--output-dir", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert ("warning: data.d: skipped 1 bad row: 1 missing field 'output' "
            '(on_bad_rows = "skip")') in " ".join(result.output.split())
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    assert data["d"]["skipped"] == {"missing field 'output'": 1}
    assert data["d"]["on_bad_rows"] == "skip" and data["d"]["train_rows"] == 3


def test_the_real_command_exits_2_with_one_line(tmp_path):
    path = make(tmp_path, "invalid JSON", model="nobody/no-model-needed")
    result = run_ftp("run", str(path), "--output-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "x.jsonl:2: invalid JSON" in errors[0], result.stderr
