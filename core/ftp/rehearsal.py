"""``ftp run --rehearse``: the whole pipeline, for a few steps, on a tiny model of the same kind.

Everything but the model's size is the pipeline's own: the data and its formats, the real
tokenizer and chat template, the methods, stages and evaluators. The model is built from the
real one's config.json alone (no weights are read): the same architecture, vocabulary and
special tokens, and the same grouping of query heads per key/value head, shrunk to 2 layers and
a hidden size near 64, randomly initialised. Each stage trains `STEPS` steps of one batch
(no gradient accumulation, except where GRPO ties the batch to its groups); evaluators
generate at most `MAX_NEW_TOKENS` tokens. What would break in the real run breaks here, with the
same error line and exit code, in seconds instead of hours.

The rehearsal writes ``runs/NAME.rehearsal`` (``ftp resume`` refuses it) with ``rehearsal.md``:
passed or FAILED with the error line, the model each stage trained, and the seconds each data
step took, how many processes trained and what could not be rehearsed on this CPU.

It trains in `PROCESSES` processes (DDP over gloo, as ``ftp run --nproc 2``), so that the
distributed path is rehearsed too: the tokenization cache filled once, the barriers, only rank 0
writing. ``--nproc N`` on the command line wins. A method that says it cannot train in several
processes on CPU (`ftp.components.Method.cpu_processes`) is rehearsed in one, and the report
says so. Evaluations read at most `EVAL_ROWS` rows of their data (perplexity: blocks), so
that a rehearsal stays short whatever the held-out split's size.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ftp.config import Pipeline

STEPS = 2
MAX_NEW_TOKENS = 8
PROCESSES = 2
EVAL_ROWS = 4
#: What the launched processes of a rehearsal read: the overrides and the model's line.
PLAN_FILE = "rehearsal.json"
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


@dataclass
class Processes:
    """How many processes a rehearsal trains in, and what it could not rehearse (said plainly).

    Attributes:
        count: Processes on this machine (1: no launch).
        notes: Sentences for rehearsal.md about the distributed run that was not rehearsed.

    """

    count: int
    notes: list[str] = field(default_factory=list)


def processes(pipeline: Pipeline, nproc: int | None) -> Processes:
    """The processes to rehearse ``pipeline`` in: ``nproc`` (``--nproc``), else `PROCESSES`.

    The pipeline's ``[distributed]`` table is translated to what one CPU machine can do: DDP
    over gloo, one node; what that leaves out is noted.
    """
    count = PROCESSES if nproc is None else nproc
    notes: list[str] = []
    d = pipeline.distributed
    if d is not None:
        if d.strategy != "ddp":
            notes.append(f"the {d.strategy} strategy (sharding the model over GPUs, and saving "
                         "it from the shards): accelerate offers it through the Trainer on "
                         "GPUs only; its options were validated, and the data and methods "
                         "were rehearsed under DDP instead")
        if d.nnodes > 1:
            notes.append(f"the {d.nnodes} machines and their rendezvous at "
                         f"{d.rdzv_endpoint}: rehearsed on this machine alone")
        if nproc is None and d.nproc_per_node not in (count, "auto"):
            notes.append(f"{d.nproc_per_node} processes per machine: rehearsed with {count}")
    if count > 1:
        alone = sorted({s.method.entry.name for s in pipeline.stages
                        if not s.method.cls.cpu_processes})
        if alone:
            notes.append(f"method(s) {', '.join(alone)} cannot train in several processes on "
                         "CPU: the whole rehearsal ran in one process")
            count = 1
    return Processes(count, notes)


def on_cpu(pipeline: Pipeline) -> Pipeline:
    """``pipeline`` with its FSDP or DeepSpeed strategy replaced by DDP, which a CPU can train.

    Validated as for GPUs (``load_pipeline(..., rehearsal=True)``), so its sharding options
    were checked; `processes` notes what is left out.
    """
    d = pipeline.distributed
    if d is None or d.strategy == "ddp":
        return pipeline
    ddp = d.model_copy(update={"strategy": "ddp", "fsdp": None, "deepspeed": None})
    return dataclasses.replace(pipeline, file=pipeline.file.model_copy(
        update={"distributed": ddp}))


def overrides(pipeline: Pipeline, model_options: dict[str, Any],
              count: int = 1) -> list[str]:
    """The ``--set`` items that turn ``pipeline`` into its rehearsal in ``count`` processes."""
    items = [f"model.{key}={json.dumps(value)}" for key, value in model_options.items()]
    for stage in pipeline.stages:
        fields = type(stage.method.config).model_fields
        if "max_steps" in fields:
            items.append(f"stages[{stage.index}].max_steps={STEPS}")
        # One batch per step: a multistage DPO at 2 pairs x 2 accumulated spent most of its
        # rehearsal there. Kept where the batch is tied to it (GRPO's groups of generations).
        if getattr(stage.method.config, "gradient_accumulation", 1) > 1 \
                and "num_generations" not in fields:
            items.append(f"stages[{stage.index}].gradient_accumulation=1")
        for name in ("max_completion_length", "max_new_tokens"):
            if name in fields:
                items.append(f"stages[{stage.index}].{name}={MAX_NEW_TOKENS}")
    for ev in pipeline.evaluations:
        fields = type(ev.evaluator.config).model_fields
        if "max_new_tokens" in fields:
            items.append(f"evaluate[{ev.index}].max_new_tokens={MAX_NEW_TOKENS}")
        if "max_blocks" in fields:  # perplexity: a held-out document can be 50 blocks long
            items.append(f"evaluate[{ev.index}].max_blocks={EVAL_ROWS}")
    if pipeline.distributed is not None or count > 1:
        items += [f"distributed.nproc_per_node={count}", "distributed.nnodes=1",
                  "distributed.node_rank=0"]
    return items


def report(pipeline: Pipeline, model_line: str, status: dict[str, Any], error: str = "",
           procs: Processes | None = None, results: dict[str, Any] | None = None) -> str:
    """The text of ``rehearsal.md`` for a rehearsal that ended with ``status`` (run.json).

    ``results`` (results.json) gives the requirements judged: judged as in the real run, but
    on a random model, so that they fail is no failure of the rehearsal.
    """
    procs = procs or Processes(1)
    timings: dict[str, float] = status.get("timings") or {}
    lines = [f"# Rehearsal of {pipeline.name!r}: {'FAILED' if error else 'passed'}", ""]
    if error:
        lines += ["The real run would fail the same way:", "", "```", f"error: {error}", "```",
                  ""]
    how = "DDP over gloo on CPU" if procs.count > 1 else "no distributed path rehearsed"
    lines += [f"Model: {model_line}.", "", f"Training: {STEPS} steps a stage, one batch a step "
              "(no gradient accumulation, except where GRPO's groups need it).", "",
              f"Processes: {procs.count} ({how}).", "",
              f"Evaluations: at most {EVAL_ROWS} rows (perplexity: blocks) of each "
              f"evaluation's data and {MAX_NEW_TOKENS} generated tokens (the real run reads "
              "them all).", "",
              "| stage | method | adapter | steps | seconds |",
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
    judged = (results or {}).get("requirements") or []
    if judged:
        held = sum(1 for r in judged if r.get("passed"))
        lines += ["", f"Requirements: judged, {held} of {len(judged)} hold on the random "
                  "model (expected to fail there; the real run exits 3 when one fails)."]
    if procs.notes:
        lines += ["", "Not rehearsed on this CPU:", ""]
        lines += [f"- {note}." for note in procs.notes]
    return "\n".join(lines) + "\n"


def rehearsal_dir(where: Path) -> Path:
    """Where the rehearsal of a run bound for ``where`` writes: ``where.rehearsal``."""
    return where.with_name(where.name + SUFFIX)
