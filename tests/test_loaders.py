"""The built-in data loaders on real files: what they read, in which order, from where."""

import json
from pathlib import Path

import pytest

from ftp import ConfigError, LoadContext, UserError
from ftp.config import load_pipeline
from ftp.data import load_records, prepare
from ftp.testing import plugin_set, run_cli, write_pipeline
from ftp_builtin.data import CsvLoader, DiskLoader, HubLoader, JsonLoader, ParquetLoader, TextLoader

ROOT = Path(__file__).resolve().parents[1]


def real(name: str) -> Path:
    """A real data file: the project's copy in examples/data, else ../shared/datasets."""
    for folder in (ROOT / "examples" / "data", ROOT.parent / "shared" / "datasets"):
        if (folder / name).is_file():
            return folder / name
    pytest.skip(f"{name} is in neither examples/data nor ../shared/datasets")
ROWS = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(5)]


def load(cls, base: Path, **options) -> tuple[list[dict], LoadContext]:
    ctx = LoadContext(dataset="d", base_dir=base)
    rows = cls(cls.Config(**options)).load(ctx)
    return rows, ctx


def origins(rows: list[dict], ctx: LoadContext, base: Path) -> list[str]:
    return [ctx.where(r).replace(f"{base}/", "") for r in rows]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --- one file of each kind ---------------------------------------------------------------------


def test_json_list_rows_are_named_by_line_and_item(tmp_path):
    # Items over several lines, two on one line, a blank line: the line each item starts on.
    text = (f"[\n  {json.dumps(ROWS[0], indent=2)},\n  {json.dumps(ROWS[1])}, "
            f"{json.dumps(ROWS[2])}\n\n  , {json.dumps(ROWS[3])}]\n")
    (tmp_path / "x.json").write_text(text, encoding="utf-8")
    rows, ctx = load(JsonLoader, tmp_path, path="x.json")
    assert rows == ROWS[:4]
    first = 2 + json.dumps(ROWS[0], indent=2).count("\n") + 1
    assert origins(rows, ctx, tmp_path) == ["x.json:2 (item 0)", f"x.json:{first} (item 1)",
                                            f"x.json:{first} (item 2)",
                                            f"x.json:{first + 2} (item 3)"]
    assert ctx.files == [tmp_path / "x.json"]


def test_json_lines_rows_are_named_by_line_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n" + json.dumps(ROWS[1]) + "\n", encoding="utf-8")
    rows, ctx = load(JsonLoader, tmp_path, path="x.jsonl")
    assert rows == ROWS[:2]
    assert origins(rows, ctx, tmp_path) == ["x.jsonl:1", "x.jsonl:3"]


def test_json_with_several_documents_is_read_as_json_lines(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(ROWS[1]) + "\n")
    rows, _ = load(JsonLoader, tmp_path, path="x.json")
    assert rows == ROWS[:2]


def test_json_field_picks_the_list_inside_an_object(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"version": 1, "rows": ROWS[:2]}))
    rows, ctx = load(JsonLoader, tmp_path, path="x.json", field="rows")
    assert rows == ROWS[:2]
    assert origins(rows, ctx, tmp_path) == ["x.json[0]", "x.json[1]"]  # by index there
    with pytest.raises(UserError, match="no top-level key 'data'"):
        load(JsonLoader, tmp_path, path="x.json", field="data")


def test_broken_json_document_is_a_file_level_error_with_its_line(tmp_path):
    (tmp_path / "x.json").write_text('[\n  {"a": 1},\n  {"a": 2,}\n]\n')
    with pytest.raises(UserError, match=r"x.json:3: invalid JSON: .*no row of it can be read"):
        load(JsonLoader, tmp_path, path="x.json")


def test_real_identity_file(tmp_path):
    rows, ctx = load(JsonLoader, tmp_path, path=str(real("identity.json")))
    assert len(rows) == 91 and set(rows[0]) == {"instruction", "input", "output"}
    where = ctx.where(rows[90])
    assert where.endswith(" (item 90)")
    line = int(where.split(":")[-1].split()[0])
    text = real("identity.json").read_text(encoding="utf-8").splitlines()
    assert text[line - 1].strip() == "{" and rows[90]["instruction"] in text[line]


def test_real_alpaca_and_c4_files(tmp_path):
    rows, ctx = load(JsonLoader, tmp_path, path=str(real("alpaca_en_demo.json")))
    assert len(rows) == 999 and set(rows[0]) == {"instruction", "input", "output"}
    assert ctx.where(rows[998]).endswith(" (item 998)")
    rows, ctx = load(JsonLoader, tmp_path, path=str(real("c4_demo.jsonl")))
    assert len(rows) == 300 and list(rows[0]) == ["text"]
    assert ctx.where(rows[299]).endswith("c4_demo.jsonl:300")


def test_csv_rows_are_keyed_by_header_and_named_by_the_line_they_end_on(tmp_path):
    (tmp_path / "x.csv").write_text('text,label\n"two\nlines",positive\nplain,negative\n',
                                    encoding="utf-8")
    rows, ctx = load(CsvLoader, tmp_path, path="x.csv")
    assert rows == [{"text": "two\nlines", "label": "positive"},
                    {"text": "plain", "label": "negative"}]
    assert origins(rows, ctx, tmp_path) == ["x.csv:3", "x.csv:4"]


def test_tsv_is_chosen_by_extension_or_by_delimiter(tmp_path):
    (tmp_path / "x.tsv").write_text("text\tlabel\na, b\tpositive\n", encoding="utf-8")
    rows, _ = load(CsvLoader, tmp_path, path="x.tsv")
    assert rows == [{"text": "a, b", "label": "positive"}]
    (tmp_path / "y.txt").write_text("text|label\nx|negative\n", encoding="utf-8")
    rows, _ = load(CsvLoader, tmp_path, path="y.txt", delimiter="|")
    assert rows == [{"text": "x", "label": "negative"}]


def test_csv_field_longer_than_the_csv_modules_default_limit(tmp_path):
    long = "word " * 40_000  # 200 KB
    (tmp_path / "x.csv").write_text(f'text,label\n"{long}",positive\n', encoding="utf-8")
    rows, _ = load(CsvLoader, tmp_path, path="x.csv")
    assert rows == [{"text": long, "label": "positive"}]


def test_real_sst2_csv(tmp_path):
    rows, _ = load(CsvLoader, tmp_path, path=str(real("sst2_eval.csv")))
    assert len(rows) == 500 and {r["label"] for r in rows} == {"positive", "negative"}


def test_parquet_round_trip(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{**r, "score": i * 0.5} for i, r in enumerate(ROWS)])
    pq.write_table(table, tmp_path / "x.parquet")
    rows, ctx = load(ParquetLoader, tmp_path, path="x.parquet")
    assert rows == [{**r, "score": i * 0.5} for i, r in enumerate(ROWS)]
    assert origins(rows, ctx, tmp_path)[4] == "x.parquet[4]"
    rows, _ = load(ParquetLoader, tmp_path, path="x.parquet", columns=["output"])
    assert rows == [{"output": r["output"]} for r in ROWS]


def test_a_file_that_is_not_parquet_is_one_clear_error(tmp_path):
    (tmp_path / "x.parquet").write_text("not parquet")
    with pytest.raises(UserError, match="x.parquet: not readable as Parquet"):
        load(ParquetLoader, tmp_path, path="x.parquet")


def test_real_wiki_text_one_document_per_line(tmp_path):
    path = real("wiki_demo.txt")
    rows, ctx = load(TextLoader, tmp_path, path=str(path))
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == [line for line in lines if line]
    assert ctx.where(rows[-1]) == f"{path}:{max(i for i, x in enumerate(lines, 1) if x)}"


def test_text_documents_are_named_by_the_line_they_start_on(tmp_path):
    (tmp_path / "x.txt").write_text("\nfirst para\ncontinues\n\n  \nsecond\n", encoding="utf-8")
    rows, ctx = load(TextLoader, tmp_path, path="x.txt", split="paragraph")
    assert [r["text"] for r in rows] == ["first para\ncontinues", "second"]
    assert origins(rows, ctx, tmp_path) == ["x.txt:2", "x.txt:6"]
    rows, ctx = load(TextLoader, tmp_path, path="x.txt", split="file")
    assert origins(rows, ctx, tmp_path) == ["x.txt"]


# --- globs and folders -------------------------------------------------------------------------


def test_a_glob_reads_files_in_sorted_order_keeping_each_rows_file(tmp_path):
    write_jsonl(tmp_path / "parts" / "b.jsonl", ROWS[2:4])
    write_jsonl(tmp_path / "parts" / "a.jsonl", ROWS[:2])
    write_jsonl(tmp_path / "parts" / "sub" / "c.jsonl", ROWS[4:])
    rows, ctx = load(JsonLoader, tmp_path, path="parts/*.jsonl")
    assert rows == ROWS[:4]
    assert origins(rows, ctx, tmp_path) == ["parts/a.jsonl:1", "parts/a.jsonl:2",
                                            "parts/b.jsonl:1", "parts/b.jsonl:2"]
    rows, _ = load(JsonLoader, tmp_path, path="parts/**/*.jsonl")
    assert rows == ROWS[:4] + ROWS[4:]  # sorted paths: a, b, sub/c
    with pytest.raises(UserError, match=r"no files match .*parts/\*.json$"):
        load(JsonLoader, tmp_path, path="parts/*.json")


def test_a_folder_reads_the_files_with_the_loaders_extensions(tmp_path):
    folder = tmp_path / "data"
    write_jsonl(folder / "2.jsonl", ROWS[3:])
    (folder / "1.json").write_text(json.dumps(ROWS[:3]))
    (folder / "notes.md").write_text("not data")
    rows, ctx = load(JsonLoader, tmp_path, path="data")
    assert rows == ROWS
    assert ctx.files == [folder / "1.json", folder / "2.jsonl"]
    rows, _ = load(JsonLoader, tmp_path, path="data", glob="2.*")
    assert rows == ROWS[3:]
    with pytest.raises(UserError, match="data: no files match any of .csv, .tsv"):
        load(CsvLoader, tmp_path, path="data")


def test_a_folder_of_csv_and_tsv_files_uses_each_ones_delimiter(tmp_path):
    (tmp_path / "a.csv").write_text("text,label\nx,positive\n")
    (tmp_path / "b.tsv").write_text("text\tlabel\ny, z\tnegative\n")
    rows, _ = load(CsvLoader, tmp_path, path=".")
    assert rows == [{"text": "x", "label": "positive"}, {"text": "y, z", "label": "negative"}]


def test_a_folder_of_parquet_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "pq").mkdir()
    pq.write_table(pa.Table.from_pylist(ROWS[2:]), tmp_path / "pq" / "b.parquet")
    pq.write_table(pa.Table.from_pylist(ROWS[:2]), tmp_path / "pq" / "a.parquet")
    rows, ctx = load(ParquetLoader, tmp_path, path="pq")
    assert rows == ROWS
    assert origins(rows, ctx, tmp_path)[2] == "pq/b.parquet[0]"


def test_a_missing_path_is_one_clear_error(tmp_path):
    for cls in (JsonLoader, CsvLoader, ParquetLoader, TextLoader):
        with pytest.raises(UserError, match="data file not found: .*nothing.here"):
            load(cls, tmp_path, path="nothing.here")


# --- save_to_disk folders and the hub loader ---------------------------------------------------


def test_disk_loader_reads_a_dataset_and_a_dataset_dicts_split(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "one"))
    datasets.DatasetDict({
        "train": datasets.Dataset.from_list(ROWS[:3]),
        "test": datasets.Dataset.from_list(ROWS[3:]),
    }).save_to_disk(str(tmp_path / "two"))

    rows, ctx = load(DiskLoader, tmp_path, path="one")
    assert rows == ROWS
    assert origins(rows, ctx, tmp_path)[1] == "one[1]"
    assert ctx.files  # its arrow files, for provenance
    rows, _ = load(DiskLoader, tmp_path, path="two")
    assert rows == ROWS[:3]  # train by default
    rows, ctx = load(DiskLoader, tmp_path, path="two", split="test")
    assert rows == ROWS[3:]
    assert origins(rows, ctx, tmp_path)[0] == "two[test][0]"
    with pytest.raises(UserError, match="no split 'validation'; splits: train, test"):
        load(DiskLoader, tmp_path, path="two", split="validation")
    with pytest.raises(UserError, match="holds one dataset, not splits; remove split"):
        load(DiskLoader, tmp_path, path="one", split="train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty: not a folder written by save_to_disk"):
        load(DiskLoader, tmp_path, path="empty")


def test_hub_loader_runs_load_dataset_with_the_split(tmp_path):
    # load_dataset on a local folder takes the same code path as a Hub id, without a network.
    repo = tmp_path / "repo"
    write_jsonl(repo / "train.jsonl", ROWS[:3])
    write_jsonl(repo / "test.jsonl", ROWS[3:])
    rows, ctx = load(HubLoader, tmp_path, path=str(repo), split="test")
    assert rows == ROWS[3:]
    assert ctx.where(rows[0]) == f"{repo}[test][0]"
    with pytest.raises(UserError, match="could not load Hub dataset 'nobody/no-such-set'"):
        load(HubLoader, tmp_path, path="nobody/no-such-set")


# --- dataset options: limit, shuffle, eval split by file -------------------------------------


def pipeline(tmp_path: Path, data: str, evaluate: str = "") -> Path:
    return write_pipeline(tmp_path / "pipeline.toml", f"""
        [pipeline]
        name = "loaders"
        seed = 3

        [model]
        path = "unused-model"

        [data.d]
        {data}

        [[stages]]
        method = "sft"
        data = "d"
        {evaluate}
    """)


def prepared(tmp_path: Path, data: str, seed: int = 3):
    p = load_pipeline(pipeline(tmp_path, data), plugin_set())
    return prepare(p.datasets["d"], load_records(p.datasets["d"], tmp_path, seed), tmp_path, seed)


def test_eval_path_is_read_with_the_same_loader_and_format(tmp_path):
    (tmp_path / "train.csv").write_text("q;a\n" + "".join(f"t{i};x{i}\n" for i in range(6)))
    (tmp_path / "held.csv").write_text("q;a\nh0;y0\nh1;y1\n")
    d = prepared(tmp_path, '''
        loader = "csv"
        path = "train.csv"
        delimiter = ";"
        eval_path = "held.csv"
        format = "alpaca"
        format_options = { instruction = "q", output = "a" }
    ''')
    assert len(d.train) == 6
    assert [r["messages"][0]["content"] for r in d.eval] == ["h0", "h1"]
    assert d.fingerprint["eval_rows"] == 2
    assert d.fingerprint["eval_sources"][0]["path"] == str((tmp_path / "held.csv").resolve())


def test_eval_path_and_eval_fraction_together_are_refused_by_validate(tmp_path):
    write_jsonl(tmp_path / "x.jsonl", ROWS)
    path = pipeline(tmp_path, '''
        loader = "json"
        path = "x.jsonl"
        format = "alpaca"
        eval_path = "x.jsonl"
        eval_fraction = 0.2
    ''')
    result = run_cli("validate", str(path))
    assert result.exit_code == 2
    assert "data.d.eval_path" in result.output and "not both" in result.output


def test_an_evaluation_on_the_eval_split_accepts_eval_path(tmp_path):
    write_jsonl(tmp_path / "x.jsonl", ROWS)
    data = 'loader = "json"\npath = "x.jsonl"\nformat = "alpaca"\n'
    ev = '[[evaluate]]\nevaluator = "loss"\ndata = "d"\nsplit = "eval"'
    with pytest.raises(ConfigError, match="no held-out split"):
        load_pipeline(pipeline(tmp_path, data, ev), plugin_set())
    assert load_pipeline(pipeline(tmp_path, data + 'eval_path = "x.jsonl"', ev), plugin_set())


def test_limit_and_seeded_shuffle(tmp_path):
    write_jsonl(tmp_path / "x.jsonl", [{"instruction": f"q{i}", "output": "a"} for i in range(40)])
    base = 'loader = "json"\npath = "x.jsonl"\nformat = "alpaca"\n'

    def order(extra: str, seed: int = 3) -> list[str]:
        d = prepared(tmp_path, base + extra, seed)
        return [r["messages"][0]["content"] for r in d.train + d.eval]

    assert order("shuffle = false\nlimit = 5") == [f"q{i}" for i in range(5)]
    first = order("limit = 20")
    assert sorted(first) == sorted(f"q{i}" for i in range(20))
    assert first != [f"q{i}" for i in range(20)]
    assert order("limit = 20") == first
    assert order("limit = 20", seed=4) != first
