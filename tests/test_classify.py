"""Classification: the labelled-text format, the `classify` method and the evaluator.

Offline and fast: a tiny random Llama (a decoder classifier, scored on its last token) and a
tiny random BERT (an encoder, scored on its first token), built in-process.
"""

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from ftp import EvalContext, TrainContext, UserError
from ftp.config import AdapterSection
from ftp.testing import run_cli, run_ftp, write_pipeline
from ftp_builtin.evaluators.classification import Classification as ClassificationEval
from ftp_builtin.evaluators.classification import classification_metrics
from ftp_builtin.formats.labelled import Classification
from ftp_builtin.methods.classify import Classify, classifier_heads, ensure_pad_token

POSITIVE = ["a great film , warm and funny", "i loved every minute of it",
            "a wonderful , moving story", "the best movie of the year",
            "funny , clever and kind", "what a joy to watch"]
NEGATIVE = ["a dull and lifeless film", "i hated every minute of it",
            "a boring , empty story", "the worst movie of the year",
            "tired , stupid and mean", "what a chore to watch"]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def make_tiny_bert(folder: Path) -> Path:
    """A tiny random BERT encoder (no head, like a sentence-embedding model) and its tokenizer."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    words = sorted({w for t in POSITIVE + NEGATIVE for w in t.split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(vocab_file=str(folder / "vocab.txt"))
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64,
                        max_position_embeddings=128, pad_token_id=0)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def reviews() -> list[dict]:
    return [{"text": t, "label": "positive"} for t in POSITIVE] + \
           [{"text": t, "label": "negative"} for t in NEGATIVE]


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["review", "sentiment"])
        writer.writeheader()
        writer.writerows({"review": r["text"], "sentiment": r["label"]} for r in rows)
    return path


OUTPUTS: dict[Path, str] = {}  # each run's terminal output, by run directory


def run(pipeline: Path, out: Path) -> Path:
    result = run_cli("run", str(pipeline), "--output-dir", str(out))
    assert result.exit_code == 0, result.output
    OUTPUTS[out] = result.output
    return out


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


# --- the format -------------------------------------------------------------------------------


def test_text_labels_are_kept_as_names_and_stripped():
    fmt = Classification()
    assert fmt.convert({"text": "  fine film \n", "label": " positive "}) == \
        {"text": "fine film", "label": "positive"}


def test_integer_labels_stay_integers_and_columns_are_configurable():
    fmt = Classification(Classification.Config(text="review", label="stars"))
    assert fmt.convert({"review": "ok", "stars": 3}) == {"text": "ok", "label": 3}


def test_a_fixed_label_list_matches_csv_text_to_listed_integers_and_travels_with_rows():
    fmt = Classification(Classification.Config(labels=[0, 1, 2]))
    # A CSV gives "1": it is the listed integer 1.
    assert fmt.convert({"text": "meh", "label": "1"}) == \
        {"text": "meh", "label": 1, "label_names": ["0", "1", "2"]}


@pytest.mark.parametrize("label, reason", [
    ("maybe", "label 'maybe' is not one of the labels: 'negative', 'positive'"),
    (1.5, "should be text or an integer, got float"),
    (True, "should be text or an integer, got bool"),
    ("  ", "empty label in 'label'"),
])
def test_bad_labels_are_refused_with_the_reason(label, reason):
    fmt = Classification(Classification.Config(labels=["negative", "positive"]))
    with pytest.raises(ValueError, match=reason):
        fmt.convert({"text": "x", "label": label})


def test_missing_or_empty_text_is_refused():
    fmt = Classification()
    with pytest.raises(ValueError, match="missing field 'text'"):
        fmt.convert({"label": "a"})
    with pytest.raises(ValueError, match="empty text"):
        fmt.convert({"text": " ", "label": "a"})


def test_a_fixed_label_list_needs_two_distinct_labels():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="at least 2"):
        Classification.Config(labels=["only"])
    with pytest.raises(ValidationError, match="more than once: a"):
        Classification.Config(labels=["a", "b", "a"])


# --- labels of the model -------------------------------------------------------------------------


def test_model_options_name_the_labels_in_a_stable_order():
    rows = [{"text": "x", "label": lab} for lab in ("positive", "negative", "positive")]
    assert Classify().model_options(rows) == {
        "num_labels": 2,
        "id2label": {0: "negative", 1: "positive"},
        "label2id": {"negative": 0, "positive": 1},
        "problem_type": "single_label_classification",
    }
    # Integers (from JSON, or digits from a CSV) in numeric order, named by their digits.
    numbers = [{"text": "x", "label": lab} for lab in (10, 2, "1")]
    assert Classify().model_options(numbers)["id2label"] == {0: "1", 1: "2", 2: "10"}


def test_a_fixed_label_list_sets_the_order_even_for_labels_not_in_the_training_rows():
    fmt = Classification(Classification.Config(labels=["positive", "neutral", "negative"]))
    rows = [fmt.convert({"text": "x", "label": "negative"}),
            fmt.convert({"text": "y", "label": "positive"})]
    assert Classify().model_options(rows)["id2label"] == \
        {0: "positive", 1: "neutral", 2: "negative"}


def test_one_label_is_not_a_classifier():
    with pytest.raises(UserError, match="at least 2 labels.*'positive'"):
        Classify().model_options([{"text": "x", "label": "positive"}])


def test_classify_starts_from_a_language_model_or_a_classifier():
    assert Classify.task == "sequence-classification"
    assert Classify.starts_from() == {"causal-lm", "sequence-classification"}


def test_training_labels_the_model_does_not_know_are_refused(tiny_model, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model, **Classify().model_options(reviews()))
    rows = reviews() + [{"text": "so so", "label": "mixed"}]
    ctx = TrainContext(stage="s", model=model, tokenizer=AutoTokenizer.from_pretrained(tiny_model),
                       provider=None, train=rows, eval=None, adapter=None,
                       output_dir=tmp_path, seed=0)
    with pytest.raises(UserError, match="'mixed' are not among the model's labels 'negative', "
                                        "'positive'"):
        Classify(Classify.Config(max_steps=1)).train(ctx)


def test_decoder_classifier_gets_the_tokenizer_pad_token(tiny_model):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    model.config.pad_token_id = None
    ensure_pad_token(model, tok)
    assert model.config.pad_token_id == tok.pad_token_id is not None


# --- LoRA trains the head ----------------------------------------------------------------------


def test_lora_trains_the_classification_head_and_leaves_the_base_alone(tiny_bert, tmp_path):
    import torch

    from ftp_builtin.models import HFProvider

    provider = HFProvider(HFProvider.Config(path=str(tiny_bert), device="cpu"))
    method = Classify(Classify.Config(max_steps=3, learning_rate=1e-2, warmup=0, batch_size=4,
                                      bf16=False))
    model = provider.load_model("sequence-classification", **method.model_options(reviews()))
    head = model.classifier.weight.detach().clone()
    query = model.bert.encoder.layer[0].attention.self.query.weight.detach().clone()
    adapter = AdapterSection(r=4)
    model = provider.apply_adapter(model, adapter)
    # peft's SEQ_CLS task puts the head in modules_to_save: a trained copy beside the original.
    heads = classifier_heads(model, 2)
    assert all(".classifier." in name for name in heads)
    assert any(heads.values()) and not all(heads.values())
    ctx = TrainContext(stage="s", model=model, tokenizer=provider.load_tokenizer(),
                       provider=provider, train=reviews(), eval=None, adapter=adapter,
                       output_dir=tmp_path, seed=0)
    trained = method.train(ctx)
    base = trained.base_model.model
    assert torch.equal(base.bert.encoder.layer[0].attention.self.query.base_layer.weight, query)
    merged = provider.merge_adapter(trained)
    assert not torch.equal(merged.classifier.weight, head)


def test_a_frozen_head_under_an_adapter_is_refused(tiny_model, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model, **Classify().model_options(reviews()))
    for p in model.parameters():
        p.requires_grad_(False)
    ctx = TrainContext(stage="s", model=model, tokenizer=AutoTokenizer.from_pretrained(tiny_model),
                       provider=None, train=reviews(), eval=None, adapter=AdapterSection(),
                       output_dir=tmp_path, seed=0)
    with pytest.raises(UserError, match=r"classification head \(score\) is frozen"):
        Classify(Classify.Config(max_steps=1)).train(ctx)


# --- the evaluator's numbers ----------------------------------------------------------------------


def test_metrics_of_a_hand_made_confusion_case():
    names = ["cat", "dog", "bird", "fish"]
    cat, dog, bird = 0, 1, 2
    true = [cat, cat, cat, dog, dog, bird, bird, bird, bird]
    pred = [cat, cat, dog, dog, cat, bird, bird, cat, dog]
    m = classification_metrics(true, pred, names)
    assert m["confusion_matrix"]["matrix"] == [[2, 1, 0, 0], [1, 1, 0, 0], [1, 1, 2, 0],
                                               [0, 0, 0, 0]]
    assert m["accuracy"] == pytest.approx(5 / 9)
    assert m["per_label"]["cat"] == pytest.approx(
        {"precision": 2 / 4, "recall": 2 / 3, "f1": 4 / 7, "support": 3})
    assert m["per_label"]["dog"] == pytest.approx(
        {"precision": 1 / 3, "recall": 1 / 2, "f1": 2 / 5, "support": 2})
    assert m["per_label"]["bird"] == pytest.approx(
        {"precision": 1.0, "recall": 1 / 2, "f1": 2 / 3, "support": 4})
    # "fish" is neither true nor predicted anywhere: zeros, and left out of the macro average.
    assert m["per_label"]["fish"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["macro_f1"] == pytest.approx((4 / 7 + 2 / 5 + 2 / 3) / 3)
    assert m["examples"] == 9


def test_evaluator_predicts_in_batches_and_reports_names():
    """A stand-in model whose prediction for each row is known: text "i" predicts PRED[i]."""
    import torch

    names = {0: "cat", 1: "dog", 2: "bird"}
    # Listed longest first: the evaluator batches them shortest first.
    pred = [0, 0, 1, 1, 0, 2, 2, 0, 1][::-1]
    truth = ["cat", "cat", "cat", "dog", "dog", "bird", "bird", "bird", "bird"][::-1]

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(1))
            self.config = SimpleNamespace(id2label=names, pad_token_id=0)
            self.batches = []

        def forward(self, input_ids):
            self.batches.append(tuple(input_ids.shape))
            assert not torch.is_grad_enabled() and not self.training
            return SimpleNamespace(logits=torch.nn.functional.one_hot(
                torch.tensor([pred[i] for i in input_ids[:, 0].tolist()]), 3).float())

    class Tokenizer:
        pad_token_id = 0

        def __call__(self, texts, **kw):
            # Row i has i + 1 tokens, so that batching by length reorders the rows.
            return {"input_ids": [[int(t)] * (int(t) + 1) for t in texts]}

        def pad(self, features, return_tensors):
            width = max(map(len, features["input_ids"]))
            return {"input_ids": torch.tensor([ids + [0] * (width - len(ids))
                                               for ids in features["input_ids"]])}

    tokenizer = Tokenizer()
    model = Model()
    data = [{"text": str(i), "label": lab} for i, lab in enumerate(truth)]
    evaluator = ClassificationEval(ClassificationEval.Config(batch_size=4, errors=2))
    out = evaluator.evaluate(EvalContext(stage="s", model=model, tokenizer=tokenizer, data=data))
    assert model.batches == [(4, 4), (4, 8), (1, 9)] and model.training
    assert out["metrics"] == pytest.approx({"accuracy": 5 / 9,
                                            "macro_f1": (4 / 7 + 2 / 5 + 2 / 3) / 3,
                                            "examples": 9})
    assert out["confusion_matrix"]["labels"] == ["cat", "dog", "bird"]
    assert out["confusion_matrix"]["matrix"] == [[2, 1, 0], [1, 1, 0], [1, 1, 2]]
    assert out["samples"] == [{"text": "0", "label": "bird", "predicted": "dog"},
                              {"text": "1", "label": "bird", "predicted": "cat"}]
    with pytest.raises(UserError, match="'fish' in the data are not among the model's labels"):
        evaluator.evaluate(EvalContext(stage="s", model=model, tokenizer=tokenizer,
                                       data=[{"text": "0", "label": "fish"}]))


# --- whole runs -------------------------------------------------------------------------------


def classify_pipeline(folder: Path, model: Path, extra_stage: str = "",
                      format_options: str = "") -> Path:
    write_csv(folder / "train.csv", reviews())
    write_csv(folder / "eval.csv", reviews()[::3])
    return write_pipeline(folder / "pipeline.toml", f"""
        [pipeline]
        name = "sentiment-test"
        seed = 3

        [model]
        path = "{model}"

        [data.reviews]
        loader = "csv"
        path = "train.csv"
        format = "classification"
        format_options = {{ text = "review", label = "sentiment"{format_options} }}

        [data.held_out]
        loader = "csv"
        path = "eval.csv"
        format = "classification"
        format_options = {{ text = "review", label = "sentiment"{format_options} }}

        [[stages]]
        method = "classify"
        data = "reviews"
        max_steps = 3
        batch_size = 4
        learning_rate = 1e-3
        logging_steps = 1
        bf16 = false
        {extra_stage}

        [[evaluate]]
        evaluator = "classification"
        data = "held_out"
        split = "all"
        before = true
    """)


@pytest.fixture(scope="module")
def decoder_run(tiny_model, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("classify-decoder")
    return run(classify_pipeline(work, tiny_model), work / "run")


def test_decoder_run_saves_a_classifier_that_keeps_its_label_names(decoder_run):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(decoder_run / "model")
    assert type(model).__name__ == "LlamaForSequenceClassification"
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert model.config.label2id == {"negative": 0, "positive": 1}
    assert model.config.pad_token_id is not None


def test_decoder_run_evaluates_before_and_after(decoder_run):
    # The evaluation-only dataset is not announced as training rows.
    assert "4 rows, for evaluation only, labelled_text" in OUTPUTS[decoder_run]
    assert "12 train / 0 held-out rows, labelled_text" in OUTPUTS[decoder_run]
    stages = results(decoder_run)["stages"]
    for stage in ("base", "classify"):
        result = stages[stage]["classification"]
        assert result["metrics"]["examples"] == 4
        assert 0 <= result["metrics"]["accuracy"] <= 1
        assert result["confusion_matrix"]["labels"] == ["negative", "positive"]
        assert sum(map(sum, result["confusion_matrix"]["matrix"])) == 4
    logged = [json.loads(line) for line in (decoder_run / "metrics.jsonl").read_text().splitlines()]
    [tokenized] = [m for m in logged if m.get("event") == "tokenized"]
    assert tokenized["label_counts"] == {"negative": 6, "positive": 6}
    assert sum("loss" in m for m in logged) == 3


def test_encoder_lora_run_with_a_fixed_label_list(tiny_bert, tmp_path):
    pipeline = classify_pipeline(tmp_path, tiny_bert, "adapter = { r = 4 }",
                                 ', labels = ["positive", "mixed", "negative"]')
    out = run(pipeline, tmp_path / "run")
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert type(model).__name__ == "BertForSequenceClassification"
    assert model.config.id2label == {0: "positive", 1: "mixed", 2: "negative"}
    assert (out / "adapter" / "adapter_config.json").is_file()
    matrix = results(out)["stages"]["classify"]["classification"]["confusion_matrix"]
    assert matrix["labels"] == ["positive", "mixed", "negative"]


def test_a_row_outside_the_fixed_labels_fails_the_run_naming_it(tiny_bert, tmp_path):
    pipeline = classify_pipeline(tmp_path, tiny_bert, "", ', labels = ["positive", "meh"]')
    result = run_cli("run", str(pipeline), "-o", str(tmp_path / "run"))
    assert result.exit_code != 0
    assert "label 'negative' is not one of the labels: 'positive', 'meh'" in result.output


# --- validation ---------------------------------------------------------------------------------


def test_validate_refuses_classify_on_conversational_data(tmp_path):
    (tmp_path / "data.json").write_text(json.dumps([{"instruction": "hi", "output": "hello"}]))
    write_pipeline(tmp_path / "pipeline.toml", """
        [pipeline]
        name = "wrong"

        [model]
        path = "some-model"

        [data.chat]
        loader = "json"
        path = "data.json"
        format = "alpaca"

        [[stages]]
        method = "classify"
        data = "chat"

        [[evaluate]]
        evaluator = "classification"
        data = "chat"
        split = "all"
    """)
    proc = run_ftp("validate", "pipeline.toml", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert ("stages[0].data: method 'classify' trains on labelled_text data, but dataset 'chat' "
            "(format 'alpaca') produces conversational") in proc.stderr
    assert "evaluate[0].data: evaluator 'classification' reads labelled_text data" in proc.stderr


def test_validate_refuses_the_classification_evaluator_on_a_language_model(tmp_path):
    write_csv(tmp_path / "data.csv", reviews())
    (tmp_path / "chat.json").write_text(json.dumps([{"instruction": "hi", "output": "hello"}]))
    write_pipeline(tmp_path / "pipeline.toml", """
        [pipeline]
        name = "wrong"

        [model]
        path = "some-model"

        [data.chat]
        loader = "json"
        path = "chat.json"
        format = "alpaca"

        [data.reviews]
        loader = "csv"
        path = "data.csv"
        format = "classification"
        format_options = { text = "review", label = "sentiment" }

        [[stages]]
        method = "sft"
        data = "chat"

        [[evaluate]]
        evaluator = "classification"
        data = "reviews"
        split = "all"
    """)
    proc = run_ftp("validate", "pipeline.toml", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "evaluator 'classification' judges sequence-classification models, but after " \
           "stage 'sft' the model is a causal-lm model" in proc.stderr


def test_same_seed_gives_the_same_numbers(decoder_run, tiny_model, tmp_path):
    """The new head is drawn at load time: it too must come from the pipeline's seed."""
    import torch

    torch.manual_seed(12345)  # whatever state an earlier run left behind must not matter
    again = run(classify_pipeline(tmp_path, tiny_model), tmp_path / "run")
    assert results(again)["stages"] == results(decoder_run)["stages"]

    def losses(r):
        return [json.loads(line).get("loss") for line in
                (r / "metrics.jsonl").read_text().splitlines()]

    assert losses(again) == losses(decoder_run)
