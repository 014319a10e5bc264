"""Built-in evaluator ``classification``: accuracy, F1 and a confusion matrix for a classifier.

The label set is the model's own (``config.id2label``), so a label the model can predict but
that never occurs in the data still shows in the confusion matrix. Macro-F1 averages over
the labels that occur in the data or in the predictions (as scikit-learn does by default):
a label absent from both says nothing about the model.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ftp import EvalContext, Evaluator, Shape, StrictConfig, UserError, hookimpl
from ftp_builtin.formats.labelled import label_name
from ftp_builtin.methods.classify import ensure_pad_token


def classification_metrics(true: list[int], predicted: list[int], names: list[str]
                           ) -> dict[str, Any]:
    """Accuracy, macro-F1, per-label precision/recall/F1/support and the confusion matrix.

    ``true`` and ``predicted`` are label ids (indices into ``names``). A ratio with nothing to
    divide (precision of a label never predicted) is 0, as in scikit-learn.
    """
    n = len(names)
    matrix = [[0] * n for _ in range(n)]
    for t, p in zip(true, predicted, strict=True):
        matrix[t][p] += 1
    per_label: dict[str, dict[str, float | int]] = {}
    f1s = []
    for i, name in enumerate(names):
        tp = matrix[i][i]
        support = sum(matrix[i])
        predicted_i = sum(row[i] for row in matrix)
        precision = tp / predicted_i if predicted_i else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[name] = {"precision": precision, "recall": recall, "f1": f1,
                           "support": support}
        if support or predicted_i:
            f1s.append(f1)
    total = len(true)
    correct = sum(matrix[i][i] for i in range(n))
    return {
        "accuracy": correct / total if total else 0.0,
        "macro_f1": sum(f1s) / len(f1s) if f1s else 0.0,
        "examples": total,
        "per_label": per_label,
        "confusion_matrix": {"labels": list(names), "rows": "true label",
                             "columns": "predicted label", "matrix": matrix},
    }


class Classification(Evaluator):
    """Accuracy, macro-F1, per-label scores and confusion matrix of a classifier on a dataset."""

    name = "classification"
    metric_names = ("accuracy", "macro_f1", "examples")
    needs_data = True
    accepts = frozenset({Shape.LABELLED_TEXT})
    tasks = frozenset({"sequence-classification"})

    class Config(StrictConfig):
        """Batching, truncation, and how many misclassified examples to keep."""

        batch_size: int = Field(32, gt=0, description="Texts per forward pass.")
        max_length: int = Field(256, gt=0, description="Longer texts are truncated (tokens).")
        errors: int = Field(
            10, ge=0, description="Misclassified examples kept in the results, first ones first."
        )

    config: Config

    def evaluate(self, ctx: EvalContext) -> dict[str, Any]:
        """Predict every record's label in batches; compare with the true labels."""
        import torch

        cfg = self.config
        model = ctx.model
        records = ctx.data or []
        id2label = getattr(model.config, "id2label", None) or {}
        names = [str(id2label[i]) for i in sorted(id2label)]
        label2id = {name: i for i, name in enumerate(names)}
        unknown = sorted({label_name(r["label"]) for r in records} - set(label2id))
        if unknown:
            raise UserError(f"labels {', '.join(map(repr, unknown))} in the data are not among "
                            f"the model's labels {', '.join(map(repr, names))}")
        true = [label2id[label_name(r["label"])] for r in records]

        ensure_pad_token(model, ctx.tokenizer)
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        enc = ctx.tokenizer([r["text"] for r in records], truncation=True,
                            max_length=cfg.max_length)
        # Batches of similar lengths pad little; predictions go back to the records' order.
        order = sorted(range(len(records)), key=lambda i: len(enc["input_ids"][i]))
        predicted = [0] * len(records)
        try:
            with torch.no_grad():
                for start in range(0, len(order), cfg.batch_size):
                    rows = order[start:start + cfg.batch_size]
                    batch = ctx.tokenizer.pad({k: [v[i] for i in rows] for k, v in enc.items()},
                                              return_tensors="pt")
                    logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
                    for i, p in zip(rows, logits.argmax(-1).tolist(), strict=True):
                        predicted[i] = p
        finally:
            model.train(was_training)

        result = classification_metrics(true, predicted, names)
        details = {k: result.pop(k) for k in ("per_label", "confusion_matrix")}
        errors = [{"text": r["text"], "label": names[t], "predicted": names[p]}
                  for r, t, p in zip(records, true, predicted, strict=True) if t != p]
        return {"metrics": result, **details, "samples": errors[:cfg.errors]}


@hookimpl
def ftp_evaluators() -> list[type]:
    """Register ``classification``."""
    return [Classification]
