"""Each component on its own, called the way ftp calls it."""

import csv

import pytest

from ftp import LoadContext, UserError
from ftp_template.evaluator import normalize, token_f1
from ftp_template.format import QAFormat
from ftp_template.loader import SQLiteLoader
from ftp_template.provider import PartlyFrozenHF
from ftp_template.report import write_metrics_csv
from ftp_template.reward import KeywordReward


def load(tmp_path, **options):
    loader = SQLiteLoader(SQLiteLoader.Config(**options))
    return loader.load(LoadContext(dataset="qa", base_dir=tmp_path))


def test_loader_reads_a_table_relative_to_the_pipeline(tmp_path, qa_db):
    rows = load(tmp_path, path="qa.db", table="qa")
    assert len(rows) == 6
    assert rows[0] == {"question": "What colour is the sky on a clear day?", "answer": "blue",
                       "context": None}


def test_loader_runs_a_query(tmp_path, qa_db):
    rows = load(tmp_path, path="qa.db", query="SELECT question, answer FROM qa "
                "WHERE context IS NOT NULL ORDER BY question")
    assert [r["answer"] for r in rows] == ["carbon dioxide", "Earth"]


def test_loader_problems_are_user_errors(tmp_path, qa_db):
    with pytest.raises(UserError, match="database not found"):
        load(tmp_path, path="missing.db", table="qa")
    with pytest.raises(UserError, match="exactly one of table or query"):
        load(tmp_path, path="qa.db")
    with pytest.raises(UserError, match="no such table: nope"):
        load(tmp_path, path="qa.db", table="nope")
    with pytest.raises(UserError, match="returned no rows"):
        load(tmp_path, path="qa.db", query="SELECT * FROM qa WHERE 0")
    with pytest.raises(UserError, match="readonly"):
        load(tmp_path, path="qa.db", query="DELETE FROM qa")


def test_format_builds_prompt_and_completion():
    fmt = QAFormat()
    assert fmt.convert({"question": "Who?", "answer": "Nova", "context": None}) == {
        "prompt": "Question: Who?\nAnswer:", "completion": " Nova"}
    squad = {"question": "Who?", "context": "Nova wrote it.",
             "answer": {"text": ["Nova", "nova"], "answer_start": [0, 0]}}
    assert fmt.convert(squad)["prompt"] == "Context: Nova wrote it.\nQuestion: Who?\nAnswer:"
    assert fmt.convert(squad)["completion"] == " Nova"


def test_format_refuses_rows_without_question_or_answer():
    with pytest.raises(ValueError, match="'answer'"):
        QAFormat().convert({"question": "Who?"})
    with pytest.raises(ValueError, match="'q'"):
        QAFormat(QAFormat.Config(question="q")).convert({"question": "Who?", "answer": "x"})


def test_exact_match_and_f1_normalise_like_squad():
    assert normalize("The  Earth!") == "earth"
    assert token_f1("carbon dioxide", " Carbon dioxide.") == 1.0
    assert token_f1("carbon", "carbon dioxide") == pytest.approx(2 / 3)
    assert token_f1("water", "ice") == 0.0


def test_keyword_reward_is_the_fraction_of_keywords_mentioned():
    reward = KeywordReward()
    rows = [{"keywords": ["Paris", "France"]}, {"keywords": "sky, blue"}, {"keywords": []}]
    assert reward.score(["q"] * 3, ["paris is nice", "The sky is blue.", "x"], rows) == [
        0.5, 1.0, None]
    with pytest.raises(UserError, match="no field 'keywords'"):
        reward.score(["q"], ["x"], [{}])


def test_metrics_csv_has_one_row_per_numeric_metric(tmp_path):
    results = {"stages": {"base": {"em": {"metrics": {"f1": 0.5, "rows": 2, "ok": True},
                                          "samples": []}}}}
    assert write_metrics_csv(tmp_path / "m.csv", results) == 2
    rows = list(csv.reader((tmp_path / "m.csv").open()))
    assert rows == [["stage", "evaluation", "metric", "value"],
                    ["base", "em", "f1", "0.5"], ["base", "em", "rows", "2"]]


def test_provider_freezes_embeddings_and_lowest_blocks(ftp_tiny_model):
    provider = PartlyFrozenHF(PartlyFrozenHF.Config(path=str(ftp_tiny_model), freeze_layers=1))
    model = provider.load_model("causal-lm")
    frozen = {n for n, w in model.named_parameters() if not w.requires_grad}
    assert "model.embed_tokens.weight" in frozen
    assert any(n.startswith("model.layers.0.") for n in frozen)
    assert not any(n.startswith("model.layers.1.") for n in frozen)
    too_many = PartlyFrozenHF(PartlyFrozenHF.Config(path=str(ftp_tiny_model), freeze_layers=9))
    with pytest.raises(UserError, match="freeze_layers = 9, but the model has 2 blocks"):
        too_many.load_model("causal-lm")
