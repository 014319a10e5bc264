"""One stage's cost: its rows as the method sees them, the estimate, the probe, the ETA.

Shared by ``ftp plan`` (every stage of one pipeline) and ``ftp models compare`` (the first
stage, per candidate model).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftp.config import Pipeline, Stage
from ftp.data import Prepared, combine, load_records, prepare
from ftp.planning.eta import StepFit, batch_tokens, fit_steps, planned_batches, typical_windows
from ftp.planning.probe import run_probe
from ftp.planning.rows import Costs, kept_rows, method_cap, probe_order, row_costs, stream_tokens
from ftp.planning.sizing import (
    MemoryEstimate,
    Setting,
    Shape,
    estimate_memory,
    shape_of,
    training_flops,
)

#: Batches of rows the probe may try, longest first, before it gives up (see `windows`).
MOST_TRIES = 8
#: The most steps the probe times on one batch (it stops earlier once two agree,
#: `ftp.planning.probe.settled`); fewer for a method whose steps generate (GRPO), each long.
PROBE_STEPS = 6
PROBE_STEPS_GENERATING = 4
#: Rows of an evaluation's data the probe times it on (its time is scaled to all of them).
EVALUATION_SAMPLE = 8


@dataclass
class Invocation:
    """How the pipeline was given, so the probe's child process loads the same one.

    Attributes:
        source: The pipeline file.
        overrides: ``--set`` values (a candidate's ``model.path`` among them).
        plugin_opts: ``-p`` values.
        only: ``--only-plugins``.
        allow_code: Consent to code the pipeline names.

    """

    source: Path
    overrides: list[str]
    plugin_opts: tuple[str, ...] = ()
    only: str | None = None
    allow_code: bool = False


@dataclass
class StageCost:
    """What one stage costs.

    Attributes:
        stage: The stage's name.
        method: Its method's name.
        shape: The model's size as this stage trains it.
        setting: Batch, sequence length, dtype... the estimate was made for.
        estimate: The estimated peak memory.
        costs: The training rows as the method sees them.
        steps: Optimizer steps the stage will take (approximate for GRPO).
        rows: Training rows the method keeps (blocks, for packed text).
        flops_per_step: Training FLOPs of one optimizer step.
        probe: What the probe measured (`ftp.planning.probe.run_probe`), or None when not run.
        notes: Lines worth showing.
        setting_accumulation: Gradient accumulation (the probe steps one batch at a time).
        windows: Row indices of each longest batch the probe may try, in order.
        typical: Row indices of each typical (median) batch the probe may time, in order.
        batches: Tokens of every batch training will run (`ftp.planning.eta`); [] unknown.
        padding_free: Whether a batch's tokens are its rows' sum (no padding).
        generates: Whether a step generates (GRPO): its time is not the tokens' it holds.

    """

    stage: str
    method: str
    shape: Shape
    setting: Setting
    estimate: MemoryEstimate
    costs: Costs | None
    steps: int
    rows: int
    flops_per_step: float
    probe: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    setting_accumulation: int = 1
    windows: list[list[int]] = field(default_factory=list)
    typical: list[list[int]] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)
    padding_free: bool = False
    generates: bool = False

    @property
    def measured(self) -> int | None:
        """The probe's peak above the libraries' baseline, or None."""
        return int(self.probe["peak_bytes"]) if self.probe and self.probe.get("ok") else None

    @property
    def seconds_per_step(self) -> float | None:
        """The probe's seconds per optimizer step (gradient accumulation included), or None."""
        if not (self.probe and self.probe.get("ok")):
            return None
        return float(self.probe["seconds_per_step"]) * self.setting_accumulation

    def upper_bound(self, flop_rate: float | None = None) -> float | None:
        """Seconds for the stage if every step took the longest batch's time.

        From the probe (plus its warm-up once), else FLOPs ÷ ``flop_rate``; None unknown.
        """
        if self.seconds_per_step is not None:
            per_step = self.seconds_per_step
            fit = self.step_fit()
            if fit is not None and self.batches and not self.generates:
                # A batch may hold more than the probe's (rows ranked after those that fit
                # whole, a refused longest batch): the bound is the longest batch's.
                per_step = max(per_step, fit.seconds(max(self.batches))
                               * self.setting_accumulation)
            return self.steps * per_step + self.warmup_seconds
        if flop_rate:
            return self.steps * self.flops_per_step / flop_rate
        return None

    @property
    def warmup_seconds(self) -> float:
        """What the probe's first steps took over its steady state: a run pays it once."""
        return float((self.probe or {}).get("warmup_seconds") or 0.0)

    def step_fit(self) -> StepFit | None:
        """Seconds of a batch against its tokens, from the probe's two timed batches."""
        if not (self.probe and self.probe.get("ok")) or self.costs is None:
            return None
        points = []
        longest = self.probe.get("window")
        if isinstance(longest, int) and longest < len(self.windows):
            points.append((batch_tokens(self.costs, self.windows[longest], self.padding_free),
                           float(self.probe["seconds_per_step"])))
        typical = self.probe.get("typical")
        if typical and typical["window"] < len(self.typical):
            points.append((batch_tokens(self.costs, self.typical[typical["window"]],
                                        self.padding_free), float(typical["seconds"])))
        return fit_steps(points)

    def probe_tokens(self) -> int | None:
        """Tokens of the longest batch the probe timed (padded as training pads), or None."""
        longest = (self.probe or {}).get("window")
        if self.costs is None or not isinstance(longest, int) or longest >= len(self.windows):
            return None
        return batch_tokens(self.costs, self.windows[longest], self.padding_free)

    def eta(self, flop_rate: float | None = None) -> float | None:
        """Seconds for the stage: the fitted seconds summed over the batches it will run.

        Where no fit applies (no probe, no row lengths, a generating method whose step time
        is its generation's), the upper bound.
        """
        fit = self.step_fit()
        if fit is None or not self.batches or self.generates:
            return self.upper_bound(flop_rate)
        return sum(fit.seconds(t) for t in self.batches) + self.warmup_seconds

    def flop_rate(self) -> float | None:
        """FLOPs per second the probe achieved, or None."""
        s = self.seconds_per_step
        return self.flops_per_step / s if s else None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {
            "stage": self.stage, "method": self.method, "shape": self.shape.as_dict(),
            "setting": self.setting.as_dict(), "estimate": self.estimate.as_dict(),
            "steps": self.steps, "rows": self.rows, "flops_per_step": self.flops_per_step,
            "probe": self.probe, "measured_bytes": self.measured,
            "seconds_per_step": self.seconds_per_step, "eta_seconds": self.eta(),
            "upper_bound_seconds": self.upper_bound(),
            "step_fit": None if (f := self.step_fit()) is None else {"a": f.a, "b": f.b},
            "batches": len(self.batches), "batch_tokens": sum(self.batches),
            "longest_batch_tokens": max(self.batches, default=None),
            "probe_batch_tokens": self.probe_tokens(),
            "truncated_rows": self.costs.truncated if self.costs else None,
            "exact_rows": self.costs.exact if self.costs else None, "notes": self.notes,
        }


def prepare_data(pipeline: Pipeline) -> dict[str, Prepared]:
    """Every dataset the stages and evaluations use, as ``ftp run`` prepares them."""
    used = {n for s in pipeline.stages for n in s.datasets}
    used |= {e.section.data for e in pipeline.evaluations if e.section.data}
    data: dict[str, Prepared] = {}
    for name in [n for n in pipeline.datasets if n in used]:
        ds = pipeline.datasets[name]
        records = load_records(ds, pipeline.base_dir, pipeline.seed)
        data[name] = prepare(ds, records, pipeline.base_dir, pipeline.seed)
    for stage in pipeline.stages:
        if stage.data not in data:
            data[stage.data] = combine(stage.data, [data[n] for n in stage.datasets],
                                       stage.weights, pipeline.seed)
    return data


def meta_shape(provider: Any, stage: Stage, train: Sequence[dict[str, Any]]) -> Shape:
    """The model's `Shape` for ``stage``, built on the meta device with the stage's adapter.

    Raises:
        UserError: when the provider cannot build a model without loading it.

    """
    from ftp.errors import UserError

    build = getattr(provider, "meta_model", None)
    if build is None:
        raise UserError(f"model provider {type(provider).__name__} cannot describe a model "
                        "without loading it (no meta_model)")
    method = stage.method.build()
    options = method.model_options(train)
    model = build(stage.method.cls.task, **options)
    adapted = None
    if stage.adapter is not None:
        import copy

        adapted = provider.apply_adapter(copy.deepcopy(model), stage.adapter)
    return shape_of(model, adapted)


def setting_for(provider: Any, stage: Stage, costs: Costs | None, order: list[int],
                head_chunk: int | None = None) -> Setting:
    """The stage's `Setting`: its batch and longest kept rows, adapter, dtype decisions.

    ``head_chunk``: what the stage's built method's `ftp.Method.head_chunk` says for the model.
    """
    import torch

    from ftp.training import native_bf16

    opts = stage.method.config
    on_gpu = provider.device() == "cuda"
    dtype = provider.torch_dtype() if hasattr(provider, "torch_dtype") else torch.float32
    weight_bytes = 2 if dtype in (torch.bfloat16, torch.float16) else 4
    bf16 = getattr(opts, "bf16", None)
    autocast = bool(bf16 if bf16 is not None else native_bf16(on_gpu))
    adapter = stage.adapter is not None
    batch = int(getattr(opts, "batch_size", 1))
    cap, _ = method_cap(opts)
    sequence = costs.longest(order, batch) if costs else (cap or 512)
    completion = getattr(opts, "max_completion_length", None)
    if isinstance(completion, int) and costs is not None:
        # GRPO: the rows are prompts; each step also holds the completions it generates.
        sequence = min(sequence + completion, cap or sequence + completion)
    fraction = None
    if getattr(opts, "padding_free", False) and costs is not None:
        # sft's padding-free loss projects only the positions that predict a labelled token.
        fraction = costs.labelled_fraction(order, batch)
    return Setting(
        batch=batch, sequence=max(sequence, 1),
        sequences_per_row=costs.sequences() if costs else 1,
        adapter=adapter, weight_bytes=weight_bytes, autocast_bf16=autocast,
        frozen_bf16=bool(getattr(opts, "frozen_bf16", False)) and autocast and adapter,
        gradient_checkpointing=bool(getattr(opts, "gradient_checkpointing", False)),
        causal_lm=stage.method.cls.task == "causal-lm",
        reference=bool(getattr(stage.method.cls, "uses_reference", False)) and not adapter,
        lora_dropout=adapter and float(getattr(stage.adapter, "dropout", 0) or 0) > 0,
        logit_fraction=fraction if fraction is not None else 1.0,
        quantized_4bit=getattr(getattr(provider, "config", None), "quantize", None) == "4bit",
        head_chunk=head_chunk,
    )


def count_steps(stage: Stage, rows: int) -> int:
    """Optimizer steps for ``rows`` training rows: max_steps, else epochs over the batches."""
    opts = stage.method.config
    max_steps = int(getattr(opts, "max_steps", -1))
    if max_steps > 0:
        return max_steps
    per_step = int(getattr(opts, "batch_size", 1)) * int(getattr(opts, "gradient_accumulation",
                                                                   1))
    per_epoch = math.ceil(rows / per_step) if rows else 0
    return math.ceil(per_epoch * float(getattr(opts, "epochs", 1)))


def windows(order: list[int], batch: int) -> list[list[int]]:
    """The batches (row indices) the probe may try, longest first.

    The top batch, then batches starting 1, 2, 4, 8... batches down: rows a method drops
    are passed within a few tries.
    """
    out: list[list[int]] = []
    start, step = 0, 1
    while start < len(order) and len(out) < MOST_TRIES:
        out.append(order[start:start + batch])
        start = step * batch
        step *= 2
    return out


def option_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows enough for `Method.model_options` in the probe.

    One per label for classifiers (the head needs every label), else the first few.
    """
    if records and "label" in records[0]:
        seen: dict[str, dict[str, Any]] = {}
        for r in records:
            seen.setdefault(str(r.get("label")), r)
        return list(seen.values())
    return list(records[:8])


def stage_cost(pipeline: Pipeline, index: int, provider: Any, tokenizer: Any | None,
               data: dict[str, Prepared], invocation: Invocation | None,
               shape: Shape | None = None,
               evaluations: list[dict[str, Any]] | None = None) -> StageCost:
    """The cost of stage ``index``: rows, estimate and (with ``invocation``) the probe.

    Args:
        pipeline: The validated pipeline.
        index: The stage's index.
        provider: The pipeline's model provider, built.
        tokenizer: Its tokenizer, or None (a config-only model: no rows are measured and the
            sequence is the method's max_length).
        data: Prepared datasets (`prepare_data`).
        invocation: How to load the pipeline in the probe's child; None: no probe.
        shape: The model's shape, when already known.
        evaluations: Evaluations for the probe to time after its steps
            (`evaluation_specs`), or None.

    """
    stage = pipeline.stages[index]
    train = data[stage.data].train
    method = stage.method.build()
    notes: list[str] = []
    costs = row_costs(method, tokenizer, train) if tokenizer is not None else None
    order = probe_order(costs) if costs else list(range(len(train)))
    if shape is None:
        shape = meta_shape(provider, stage, train)
    setting = setting_for(provider, stage, costs, order,
                          method.head_chunk(shape.model_type) if shape.model_type else None)
    estimate = estimate_memory(shape, setting)
    if costs is None:
        rows = len(train)
        notes.append("no tokenizer: every row counted at max_length")
    elif costs.packed and costs.cap:
        rows = stream_tokens(costs) // costs.cap
    else:
        rows = kept_rows(costs)
    generations = getattr(stage.method.config, "num_generations", None)
    generates = isinstance(generations, int)
    if isinstance(generations, int):
        rows *= generations  # GRPO: the batch counts completions, several per prompt
        notes.append("GRPO: steps counted as prompts × num_generations ÷ batch (approximate)")
    steps = count_steps(stage, rows)
    tokens = setting.batch * setting.sequences_per_row * setting.sequence
    accumulation = int(getattr(stage.method.config, "gradient_accumulation", 1))
    flops = training_flops(shape, tokens, setting.adapter) * accumulation
    result = StageCost(stage.name, stage.method.entry.name, shape, setting, estimate, costs,
                       steps, rows, flops, notes=notes, setting_accumulation=accumulation,
                       padding_free=bool(getattr(stage.method.config, "padding_free", False)),
                       generates=generates)
    if invocation is not None and train:
        batch = setting.batch
        result.windows = windows(order, batch)
        # A second, typical batch for the ETA's line (not for a generating method, nor for
        # packed text, whose batches all hold the same tokens).
        packed = costs is not None and costs.packed
        result.typical = ([] if generates or packed or costs is None
                          else typical_windows(
                              order, batch, MOST_TRIES,
                              lambda w: batch_tokens(costs, w, result.padding_free)))
        # Where only the trainer knows which rows it keeps, the probe asks it.
        ask = costs is not None and not costs.exact and not generates
        result.probe = run_probe({
            "pipeline": str(invocation.source), "overrides": invocation.overrides,
            "plugin_opts": list(invocation.plugin_opts), "only": invocation.only,
            "allow_code": invocation.allow_code, "stage": index,
            "windows": [[train[i] for i in w] for w in result.windows],
            "typical": [[train[i] for i in w] for w in result.typical],
            "count_rows": list(train) if ask else None,
            "option_rows": option_rows(train),
            "steps": PROBE_STEPS_GENERATING if generates else PROBE_STEPS,
            "evaluations": evaluations or [],
        })
    if costs is not None and not generates:
        trained = _trained(costs, order, (result.probe or {}).get("trained_rows"))
        if not costs.packed and len(trained) != result.rows:
            notes.append(f"the method's trainer keeps {len(trained)} of {len(train)} rows")
            result.rows = len(trained)
            result.steps = count_steps(stage, result.rows)
        result.batches = planned_batches(costs, trained, setting.batch, accumulation,
                                         result.steps, pipeline.seed, result.padding_free)
    return result


def _trained(costs: Costs, order: list[int], counted: int | None) -> list[int]:
    """Indices of the rows the method trains on.

    The rows it does not say it drops; where its trainer counted fewer (``counted``), the
    first of them in the probe's order, which ranks the rows a trainer is likeliest to drop
    (those the cap cuts) last.
    """
    kept = [i for i in order if costs.rows[i].kept is not False]
    return kept[:counted] if isinstance(counted, int) and counted < len(kept) else kept


def evaluation_specs(pipeline: Pipeline, data: dict[str, Prepared]) -> list[dict[str, Any]]:
    """What the probe times of the pipeline's evaluations: each on a sample, with its scale.

    ``runs`` counts the times a run evaluates it (before training, after each stage it names);
    a data evaluator gets its first `EVALUATION_SAMPLE` rows, ``scale`` being its rows ÷
    those.
    """
    out: list[dict[str, Any]] = []
    for ev in pipeline.evaluations:
        runs = int(bool(ev.section.before)) + len(ev.after_stages)
        if not runs:
            continue
        rows = data[ev.section.data].split(ev.section.split) if ev.section.data else None
        # A list: the spec goes to the probe as JSON (a slice of packed rows is a view).
        sample = list(rows[:EVALUATION_SAMPLE]) if rows is not None else None
        out.append({"name": ev.name, "runs": runs, "rows": sample,
                    "scale": len(rows) / len(sample) if rows and sample else 1.0})
    return out


def memory_of_device(provider: Any) -> int:
    """The memory training can use here: the GPU's, else the machine's RAM (bytes)."""
    if provider.device() == "cuda":
        import torch

        return int(torch.cuda.get_device_properties(0).total_memory)
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))

