"""The ``lm_eval`` evaluator: EleutherAI's lm-evaluation-harness on the model in memory.

The model a stage produced is wrapped in lm_eval's ``HFLM`` as it is (no save and reload),
and ``lm_eval.simple_evaluate`` runs the requested tasks on it. Each task's metrics come back
flattened as ``TASK/METRIC`` (``sst2_zeroshot/acc``, ``sst2_zeroshot/acc_stderr``), which is
what results.json, the console and ``ftp_evaluation_done`` observers see.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from ftp import EvalContext, Evaluator, StrictConfig, UserError
from ftp_lm_eval.declared import declared_metrics
from ftp_lm_eval.tasks import BUNDLED_TASKS, check_task_dirs, load_tasks


class LmEval(Evaluator):
    """EleutherAI lm-evaluation-harness tasks, from local task folders or lm_eval's own."""

    name = "lm_eval"

    class Config(StrictConfig):
        """Which tasks, where their definitions are, and how to run them."""

        tasks: list[str] = Field(
            min_length=1,
            description="lm_eval task, group or tag names, e.g. ['sst2_zeroshot'] (shipped "
            "with this plugin).",
        )
        task_dirs: list[str] = Field(
            default_factory=list,
            description="Folders of lm_eval task YAML files and their data, relative to the "
            "pipeline file; searched before lm_eval's own tasks.",
        )
        num_fewshot: int | None = Field(
            None, ge=0,
            description="Examples before each prompt; unset: the task's own setting, else 0.",
        )
        limit: int | float | None = Field(
            None, gt=0,
            description="Rows per task: a count, or a fraction below 1; unset: all rows.",
        )
        batch_size: int = Field(8, gt=0, description="Requests per forward pass.")
        metrics: list[str] | None = Field(
            None, min_length=1,
            description="Metric names to report, e.g. ['acc']; unset: every metric the tasks "
            "compute.",
        )
        stderr: bool = Field(
            True, description="Also report each metric's standard error (METRIC_stderr)."
        )
        apply_chat_template: bool = Field(
            False, description="Render each prompt through the tokenizer's chat template."
        )

        @field_validator("tasks", "task_dirs", "metrics")
        @classmethod
        def _no_empty_names(cls, v: list[str] | None) -> list[str] | None:
            if v and any(not s.strip() for s in v):
                raise ValueError("names must not be empty")
            return v

        @field_validator("limit")
        @classmethod
        def _count_or_fraction(cls, v: int | float | None) -> int | float | None:
            # lm_eval reads a float below 1 as a fraction and anything else as a count.
            if isinstance(v, float) and v >= 1:
                raise ValueError("give a whole number of rows (e.g. 20) or a fraction below 1 "
                                 "(e.g. 0.1)")
            return v

    config: Config

    def reported_metrics(self, base_dir: Path | None = None) -> tuple[str, ...]:
        """``TASK/METRIC`` names, read from the task YAML files; ``*`` where unknown.

        A task in the bundled folder or in ``task_dirs`` declares its metrics exactly; lm_eval's
        own tasks, groups and tags are not looked up (that needs lm_eval's index, seconds to
        build) and accept any name (see `ftp_lm_eval.declared`).
        """
        cfg = self.config
        dirs = [Path(d) if Path(d).is_absolute() or base_dir is None else base_dir / d
                for d in cfg.task_dirs]
        if base_dir is None and any(not Path(d).is_absolute() for d in cfg.task_dirs):
            return ("*",)  # relative folders with nowhere to resolve them: nothing is known
        return declared_metrics(cfg.tasks, [BUNDLED_TASKS, *dirs], cfg.metrics, cfg.stderr)

    def evaluate(self, ctx: EvalContext) -> dict[str, Any]:
        """Run the tasks on ``ctx.model``; return flattened metrics and per-task details."""
        import lm_eval
        from lm_eval.models.huggingface import HFLM

        cfg = self.config
        # Relative to the pipeline file's folder, as every path in a pipeline is.
        dirs = [ctx.resolve(p) for p in cfg.task_dirs]
        check_task_dirs(dirs)
        manager, specs = load_tasks(cfg.tasks, dirs)

        model = ctx.model
        was_training = model.training
        try:
            with _quiet("lm_eval.models.huggingface"):
                # HFLM warns at length that an in-memory model skips its loading options.
                lm = HFLM(pretrained=model, tokenizer=ctx.tokenizer, batch_size=cfg.batch_size)
            out = lm_eval.simple_evaluate(
                model=lm,
                tasks=specs,
                task_manager=manager,
                num_fewshot=cfg.num_fewshot,
                limit=cfg.limit,
                # For mean metrics (acc) the stderr is closed-form; iterations matter only
                # for the few metrics lm_eval bootstraps.
                bootstrap_iters=1000 if cfg.stderr else 0,
                log_samples=False,
                apply_chat_template=cfg.apply_chat_template,
                random_seed=ctx.seed,
                numpy_random_seed=ctx.seed,
                torch_random_seed=ctx.seed,
                fewshot_random_seed=ctx.seed,
            )
        finally:
            model.train(was_training)  # HFLM puts the model in eval mode
        metrics = flatten_metrics(out, cfg.metrics, cfg.stderr)
        return {"metrics": metrics, "tasks": task_details(out),
                "lm_eval_version": lm_eval.__version__}


def flatten_metrics(out: dict[str, Any], keep: list[str] | None = None,
                    stderr: bool = True) -> dict[str, float]:
    """``simple_evaluate``'s per-task results as ``{"TASK/METRIC": value}``.

    lm_eval keys a metric as ``METRIC,FILTER``; the filter is left out of the name when it is
    lm_eval's default ``none`` and appended (``TASK/METRIC/FILTER``) otherwise. Values that
    are not numbers (a stderr of ``"N/A"``) are dropped.

    Args:
        out: What ``lm_eval.simple_evaluate`` returned.
        keep: Metric names to keep (their stderr comes with them); None keeps all.
        stderr: Whether to keep ``METRIC_stderr`` values.

    Raises:
        UserError: A name in ``keep`` that no task computed.

    """
    metrics: dict[str, float] = {}
    computed: set[str] = set()
    sections = {**out.get("results", {}), **out.get("groups", {})}
    for task, values in sections.items():
        for key, value in values.items():
            metric, sep, filt = key.partition(",")
            if not sep or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            base = metric.removesuffix("_stderr")
            computed.add(base)
            if (keep and base not in keep) or (metric != base and not stderr):
                continue
            name = f"{task}/{metric}" if filt == "none" else f"{task}/{metric}/{filt}"
            metrics[name] = float(value)
    unknown = [m for m in keep or [] if m not in computed]
    if unknown:
        raise UserError(f"metrics {unknown} were not computed by tasks "
                        f"{sorted(out.get('results', {}))}; they computed: "
                        f"{', '.join(sorted(computed)) or 'nothing'}")
    return dict(sorted(metrics.items()))


def task_details(out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per task: rows scored and available, few-shot count and task version."""
    details = {}
    for task in out.get("results", {}):
        samples = out.get("n-samples", {}).get(task, {})
        details[task] = {
            "rows": samples.get("effective"),
            "rows_available": samples.get("original"),
            "num_fewshot": out.get("n-shot", {}).get(task),
            "version": out.get("versions", {}).get(task),
        }
    return details


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
