"""The plugin contract of docs/writing-plugins.md, one test per statement, through real runs.

A plugin with a format that writes an extra field, a method that shows its tokens and logs an
event, and an evaluator that reads the extra field and returns Q:/A: samples.
"""

import json

import pytest

import ftp
from ftp import (
    IGNORE_INDEX,
    EvalContext,
    Evaluator,
    Format,
    Method,
    Shape,
    TokenizedExample,
    TokenSequence,
    TrainContext,
    hookimpl,
)
from ftp.testing import plugin, run_cli, run_pipeline, write_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")

ROWS = [{"q": f"What is {i} plus {i}?", "a": str(2 * i), "tags": f"sum,{i}"} for i in range(6)]


class Quiz:
    """A third-party plugin, written against the names `ftp` exports only."""

    seen: dict[str, list[dict]] = {}

    class QuizFormat(Format):
        """q/a columns as a conversation; the tags column as an extra "keywords" field."""

        name = "quiz"
        produces = Shape.CONVERSATIONAL

        def __init__(self, config=None):
            super().__init__(config)
            self.tagged = 0

        def convert(self, record):
            self.tagged += bool(record.get("tags"))
            return {"messages": [{"role": "user", "content": record["q"]},
                                 {"role": "assistant", "content": record["a"]}],
                    "keywords": record["tags"].split(",")}

        def notes(self):
            return [f"{self.tagged} rows had tags"]

    class Peek(Method):
        """Trains nothing; records what it was given and shows one token sequence per record."""

        name = "peek"
        accepts = frozenset({Shape.CONVERSATIONAL})

        def train(self, ctx: TrainContext):
            Quiz.seen["train"] = ctx.train
            ctx.log({"stage": ctx.stage, "event": "peeked", "rows": len(ctx.train)})
            return ctx.model

        def tokenize_examples(self, tokenizer, records):
            out = []
            for record in records:
                ids = tokenizer(record["messages"][1]["content"])["input_ids"]
                example = TokenizedExample(length=len(ids))
                example.sequences.append(TokenSequence(ids, [IGNORE_INDEX] + ids[1:]))
                out.append(example)
            return out

    class KeywordCheck(Evaluator):
        """Reads the format's extra field; one Q:/A: sample per row."""

        name = "keyword-check"
        needs_data = True
        accepts = frozenset({Shape.CONVERSATIONAL})

        def evaluate(self, ctx: EvalContext):
            Quiz.seen["eval"] = ctx.data
            return {"metrics": {"with_keywords": sum("keywords" in r for r in ctx.data)},
                    "samples": [{"prompt": r["messages"][0]["content"],
                                 "answer": " ".join(r["keywords"]), "extra": 1}
                                for r in ctx.data],
                    "note": "kept as it is"}

    @hookimpl
    def ftp_formats(self):
        return [self.QuizFormat]

    @hookimpl
    def ftp_methods(self):
        return [self.Peek]

    @hookimpl
    def ftp_evaluators(self):
        return [self.KeywordCheck]

    @hookimpl
    def ftp_dataset_ready(self, name, train, eval):
        Quiz.seen["ready"] = train


PIPELINE = """
    [pipeline]
    name = "contract"
    [model]
    path = "{model}"
    [data.quiz]
    loader = "json"
    path = "quiz.json"
    format = "quiz"
    shuffle = false
    [[stages]]
    method = "peek"
    data = "quiz"
    [[stages]]
    method = "sft"
    data = "quiz"
    max_steps = 2
    batch_size = 2
    logging_steps = 1
    [[evaluate]]
    evaluator = "keyword-check"
    data = "quiz"
    split = "train"
    """


@pytest.fixture(scope="module")
def contract_run(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("contract")
    (folder / "quiz.json").write_text(json.dumps(ROWS))
    Quiz.seen.clear()
    return run_pipeline(PIPELINE.format(model=tiny_model), folder, plugins=[Quiz()])


def test_tokenized_example_sequence_and_ignore_index_are_exported():
    assert {"TokenizedExample", "TokenSequence", "IGNORE_INDEX"} <= set(ftp.__all__)
    assert TokenSequence([5, 6], [IGNORE_INDEX, 6]).trained == 1
    assert IGNORE_INDEX == -100


def test_extra_record_fields_reach_hooks_methods_and_evaluators(contract_run):
    for where in ("ready", "train", "eval"):
        assert [r["keywords"] for r in Quiz.seen[where]] == [["sum", str(i)] for i in range(6)]
    assert contract_run.metrics("sft", "keyword-check") == {"with_keywords": 6}
    stored = contract_run.results["stages"]["sft"]["keyword-check"]
    assert stored["note"] == "kept as it is" and stored["samples"][0]["extra"] == 1


def test_format_notes_are_warnings_naming_the_dataset(contract_run):
    assert "warning: data.quiz: 6 rows had tags" in contract_run.log


def test_prompt_answer_samples_are_shown_as_q_and_a(contract_run):
    log = contract_run.log
    assert "Q: What is 0 plus 0?\n  A: sum 0" in log
    assert "Q: What is 4 plus 4?" in log and "Q: What is 5 plus 5?" not in log  # five shown
    summary = (contract_run.run_dir / "summary.md").read_text()
    assert "  - Q: What is 5 plus 5? — A: sum 5" in summary  # all of them


def test_metrics_jsonl_has_event_step_and_summary_lines(contract_run):
    lines = [json.loads(x) for x in
             (contract_run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all("stage" in r for r in lines)
    events = [r for r in lines if "event" in r]
    assert all("step" not in r for r in events)
    assert {"stage": "peek", "event": "peeked", "rows": 6} in events
    tokenized = next(r for r in events if r["event"] == "tokenized")
    assert tokenized["stage"] == "sft"
    assert {"examples", "tokens", "loss_tokens", "truncated", "dropped", "cached",
            "untrained_turns"} <= set(tokenized)
    steps = [r for r in lines if "step" in r and "train_loss" not in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert all({"loss", "learning_rate", "tokens_seen", "tokens_per_second"} <= set(r)
               for r in steps)
    summary = lines[-1]
    assert summary["stage"] == "sft" and summary["step"] == 2
    assert {"train_loss", "train_runtime", "tokens_seen", "tokens_per_second"} <= set(summary)


def test_tokenize_examples_is_what_preview_shows(tiny_model, tmp_path):
    (tmp_path / "quiz.json").write_text(json.dumps(ROWS))
    pipeline = write_pipeline(tmp_path / "p.toml", PIPELINE.format(model=tiny_model))
    with plugin(Quiz(), name="quiz"):
        result = run_cli("data", "preview", str(pipeline), "--json", "-n", "2")
    assert result.exit_code == 0, result.output
    (ds,) = json.loads(result.stdout)["datasets"]
    assert ds["method"] == "peek"
    seq = ds["examples"][0]["sequences"][0]
    assert seq["labels"] == [IGNORE_INDEX] + seq["input_ids"][1:]
    assert seq["trained"] == len(seq["input_ids"]) - 1
