"""Several datasets in one stage: concatenated in order, or a seeded sample mixed by weight."""

import json
from pathlib import Path

import pytest

from ftp import ConfigError, UserError
from ftp.config import load_pipeline
from ftp.data import Prepared, combine, mix_counts
from ftp.testing import plugin_set, run_cli, write_pipeline


def write_sets(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("a", 12), ("b", 6)):
        rows = [{"instruction": f"{name}{i}?", "input": "", "output": f"{name}{i}."}
                for i in range(n)]
        (folder / f"{name}.json").write_text(json.dumps(rows))
    (folder / "t.jsonl").write_text(json.dumps({"text": "plain text"}) + "\n")


def pipeline(folder: Path, data: str, method: str = "sft", model: str = "unused",
             extra: str = "") -> Path:
    write_sets(folder)
    return write_pipeline(folder / "pipeline.toml", f"""
        [pipeline]
        name = "mix"
        seed = 5

        [model]
        path = {json.dumps(model)}

        [data.a]
        loader = "json"
        path = "a.json"
        format = "alpaca"

        [data.b]
        loader = "json"
        path = "b.json"
        format = "alpaca"
        eval_fraction = 0.34

        [data.t]
        loader = "json"
        path = "t.jsonl"
        format = "text"

        [[stages]]
        method = "{method}"
        data = {data}
        max_steps = 1
        batch_size = 2
        {extra}
    """)


def problems(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_pipeline(path, plugin_set())
    return str(info.value)


# --- validation, before any model loads --------------------------------------------------------


def test_a_list_and_a_table_of_weights_are_valid(tmp_path):
    stage = load_pipeline(pipeline(tmp_path, '["b", "a"]'), plugin_set()).stages[0]
    assert (stage.data, stage.datasets, stage.weights) == ("b+a", ["b", "a"], None)
    stage = load_pipeline(pipeline(tmp_path, "{ a = 0.7, b = 0.3 }"), plugin_set()).stages[0]
    assert (stage.data, stage.datasets, stage.weights) == ("a*0.7+b*0.3", ["a", "b"],
                                                           {"a": 0.7, "b": 0.3})
    stage = load_pipeline(pipeline(tmp_path, '"a"'), plugin_set()).stages[0]
    assert (stage.data, stage.datasets, stage.weights) == ("a", ["a"], None)


@pytest.mark.parametrize(("data", "expected"), [
    ('["a", "zz"]', "stages[0].data[1]: no dataset named 'zz'"),
    ("{ a = 1, zz = 1 }", "stages[0].data.zz: no dataset named 'zz'"),
    ("{ a = 0.7, b = 0 }", "weights must be positive; 'b' has 0"),
    ("{ a = 0.7, b = -1 }", "weights must be positive; 'b' has -1"),
    ("[]", "name at least one dataset"),
    ('["a", "a"]', "a dataset is listed twice"),
    ('["a", "t"]', "datasets trained on together must produce the same shape; got 'a' "
                   "conversational, 't' language_modeling"),
])
def test_bad_stage_data_is_refused(tmp_path, data, expected):
    assert expected in problems(pipeline(tmp_path, data))


def test_every_dataset_must_suit_the_method(tmp_path):
    text = problems(pipeline(tmp_path, '["t", "a"]', method="cpt"))
    assert "stages[0].data[1]: method 'cpt' trains on language_modeling data, but dataset 'a'" \
        in text


def test_ftp_validate_reports_a_mixture_problem_in_one_line(tmp_path):
    result = run_cli("validate", str(pipeline(tmp_path, "{ a = 1, b = 0 }")))
    assert result.exit_code == 2
    assert "stages[0].data" in result.output and "weights must be positive" in result.output


# --- combining prepared datasets ---------------------------------------------------------------


def part(name: str, n: int, n_eval: int = 0) -> Prepared:
    rows = [{"text": f"{name}{i}"} for i in range(n + n_eval)]
    return Prepared(name, "language_modeling", rows[:n], rows[n:], {}, [], {"invalid JSON": 1})


def texts(rows: list[dict]) -> list[str]:
    return [r["text"] for r in rows]


def test_concatenation_keeps_every_row_in_the_order_given():
    d = combine("b+a", [part("b", 2, 1), part("a", 3)], None, seed=1)
    assert texts(d.train) == ["b0", "b1", "a0", "a1", "a2"]
    assert texts(d.eval) == ["b2"]
    assert d.fingerprint["train_rows_from"] == {"b": 2, "a": 3}
    assert d.skipped == {"invalid JSON": 2}


def test_mix_counts_use_no_row_twice_and_keep_the_weights():
    assert mix_counts({"a": 100, "b": 100}, {"a": 3, "b": 1}) == {"a": 100, "b": 33}
    assert mix_counts({"a": 10, "b": 1000}, {"a": 0.5, "b": 0.5}) == {"a": 10, "b": 10}
    assert mix_counts({"a": 1000, "b": 30}, {"a": 0.7, "b": 0.3}) == {"a": 70, "b": 30}


def test_a_mixture_is_a_seeded_sample_in_the_weights_proportions():
    parts = [part("a", 300), part("b", 50)]
    d = combine("a*0.8+b*0.2", parts, {"a": 0.8, "b": 0.2}, seed=1)
    a = [t for t in texts(d.train) if t.startswith("a")]
    b = [t for t in texts(d.train) if t.startswith("b")]
    assert (len(a), len(b)) == (200, 50)
    assert len(set(a)) == 200 and set(a) <= set(texts(parts[0].train))
    assert texts(combine("m", parts, {"a": 0.8, "b": 0.2}, seed=1).train) == texts(d.train)
    other = combine("m", parts, {"a": 0.8, "b": 0.2}, seed=2)
    assert set(texts(other.train)) != set(texts(d.train))
    assert texts(d.train) != a + b  # shuffled together, not one after another


def test_a_weight_too_small_to_give_a_row_is_an_error():
    with pytest.raises(UserError, match="dataset 'b' would give no rows"):
        combine("m", [part("a", 10), part("b", 10)], {"a": 1, "b": 0.01}, seed=1)


# --- a whole run -------------------------------------------------------------------------------


def test_a_run_trains_on_a_mixture_and_records_its_provenance(tmp_path, tiny_model):
    evaluate = '[[evaluate]]\nevaluator = "loss"\ndata = "b"\nsplit = "eval"'
    path = pipeline(tmp_path, "{ a = 0.5, b = 0.5 }", model=str(tiny_model), extra="\n" + evaluate)
    result = run_cli("run", str(path), "--output-dir", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert "a 4 + b 4 = 8 train / 2 held-out rows" in result.output
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    assert set(data) == {"a", "b", "a*0.5+b*0.5"}  # t is unused: not loaded
    mixed = data["a*0.5+b*0.5"]
    assert mixed["datasets"] == ["a", "b"] and mixed["weights"] == {"a": 0.5, "b": 0.5}
    assert mixed["train_rows_from"] == {"a": 4, "b": 4}
    assert data["b"]["train_rows"] == 4 and data["b"]["eval_rows"] == 2
    resolved = json.loads((tmp_path / "run" / "resolved.json").read_text())
    assert resolved["stages"][0]["datasets"] == ["a", "b"]
    assert [e["name"] for e in resolved["evaluate"]] == ["loss"]  # an unnamed one's default
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert "loss" in results["stages"]["sft"]  # the evaluation still reads dataset b alone
