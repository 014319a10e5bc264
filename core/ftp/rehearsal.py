"""``ftp run --rehearse``: the whole pipeline, for a few steps, on a tiny model of the same kind.

Everything but the model's size is the pipeline's own: the data and its formats, the real
tokenizer and chat template, the methods, stages and evaluators. The model is built from the
real one's config.json alone (no weights are read): the same architecture, vocabulary and
special tokens, and the same grouping of query heads per key/value head, shrunk to 2 layers and
a hidden size near 64, randomly initialised. Each stage trains `STEPS` steps; evaluators
generate at most `MAX_NEW_TOKENS` tokens. What would break in the real run breaks here, with the
same error line and exit code, in seconds instead of hours.

The rehearsal writes ``runs/NAME.rehearsal`` (``ftp resume`` refuses it) with ``rehearsal.md``:
passed or FAILED with the error line, the model each stage trained, and the seconds each data
step took. It runs in one process: a ``[distributed]`` table is validated, not rehearsed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ftp.config import Pipeline

STEPS = 2
MAX_NEW_TOKENS = 8
SUFFIX = ".rehearsal"
REPORT = "rehearsal.md"
MODEL_DIR = "rehearsal-model"
LAYERS = 2
HIDDEN = 64


def shrink_config(config: Any) -> str:
    """Shrink a transformers config in place to `LAYERS` layers and a hidden size near 64.

    The vocabulary, special token ids and the number of query heads per key/value head (GQA)
    are kept. Returns a line describing the shrunk model.
    """
    heads = int(getattr(config, "num_attention_heads", 4) or 4)
    kv = int(getattr(config, "num_key_value_heads", None) or heads)
    group = max(1, heads // max(kv, 1))
    new_kv = max(1, 4 // group)
    new_heads = new_kv * group
    head_dim = HIDDEN // new_heads if HIDDEN % new_heads == 0 else 16
    hidden = head_dim * new_heads
    sizes = {"num_hidden_layers": LAYERS, "hidden_size": hidden,
             "intermediate_size": 2 * hidden, "num_attention_heads": new_heads}
    if hasattr(config, "num_key_value_heads"):
        sizes["num_key_value_heads"] = new_kv
    if hasattr(config, "head_dim"):
        sizes["head_dim"] = head_dim
    for key, value in sizes.items():
        setattr(config, key, value)
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = config.layer_types[:LAYERS]
    arch = ", ".join(getattr(config, "architectures", None) or [config.model_type])
    return (f"{arch}: {LAYERS} layers, hidden {hidden}, {new_heads} heads / {new_kv} key-value "
            f"heads ({group} per group, as the real model), vocabulary "
            f"{getattr(config, 'vocab_size', '?')}; random weights")


def overrides(pipeline: Pipeline, model_options: dict[str, Any]) -> list[str]:
    """The ``--set`` items that turn ``pipeline`` into its rehearsal."""
    items = [f"model.{key}={json.dumps(value)}" for key, value in model_options.items()]
    for stage in pipeline.stages:
        fields = type(stage.method.config).model_fields
        if "max_steps" in fields:
            items.append(f"stages[{stage.index}].max_steps={STEPS}")
        for name in ("max_completion_length", "max_new_tokens"):
            if name in fields:
                items.append(f"stages[{stage.index}].{name}={MAX_NEW_TOKENS}")
    for ev in pipeline.evaluations:
        if "max_new_tokens" in type(ev.evaluator.config).model_fields:
            items.append(f"evaluate[{ev.index}].max_new_tokens={MAX_NEW_TOKENS}")
    if pipeline.distributed is not None:
        items += ["distributed.nproc_per_node=1", "distributed.nnodes=1",
                  "distributed.node_rank=0"]
    return items


def report(pipeline: Pipeline, model_line: str, status: dict[str, Any], error: str = "") -> str:
    """The text of ``rehearsal.md`` for a rehearsal that ended with ``status`` (run.json)."""
    timings: dict[str, float] = status.get("timings") or {}
    lines = [f"# Rehearsal of {pipeline.name!r}: {'FAILED' if error else 'passed'}", ""]
    if error:
        lines += ["The real run would fail the same way:", "", "```", f"error: {error}", "```",
                  ""]
    lines += [f"Model: {model_line}.", "", "| stage | method | adapter | steps | seconds |",
              "|---|---|---|---|---|"]
    for stage in pipeline.stages:
        adapter = stage.adapter.type if stage.adapter else "—"
        label = f"stage {stage.name!r}: train ({stage.method.entry.name})"
        took = timings.get(label)
        lines.append(f"| {stage.name} | {stage.method.entry.name} | {adapter} | "
                     f"{getattr(stage.method.config, 'max_steps', '—')} | "
                     f"{'not reached' if took is None else took} |")
    data = {k: v for k, v in timings.items()
            if k.startswith(("load data", "format data", "mix data", "concatenate data",
                             "load tokenizer"))}
    lines += ["", "Data steps (these take as long in the real run):", "",
              "| step | seconds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in data.items()]
    if pipeline.distributed is not None:
        d = pipeline.distributed
        lines += ["", f"Not rehearsed: the [distributed] {d.strategy} run over "
                  f"{d.nproc_per_node} process(es) per node (rehearsed in one process)."]
    return "\n".join(lines) + "\n"


def rehearsal_dir(where: Path) -> Path:
    """Where the rehearsal of a run bound for ``where`` writes: ``where.rehearsal``."""
    return where.with_name(where.name + SUFFIX)
