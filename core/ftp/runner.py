"""Running a validated pipeline: it reads like the pipeline file.

load data → load tokenizer → load model → (evaluate before) → per stage: train → merge →
save → evaluate. Every step is announced and timed; an exception becomes one `RunError` line
naming the step, the component and the plugin that provides it.

A run holds its folder's lock (`ftp.runlock`) for its whole life, writes checkpoints inside
each stage (`ftp.checkpoints`, `ftp.training_guard`) and stops cleanly on SIGTERM/SIGINT
(`ftp.signals`). With ``resume`` it continues a failed, interrupted or killed run at its
first unfinished step: a stage's newest good checkpoint, or the evaluations after a stage
whose model is already saved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import platform
import shutil
import sys
import time
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from rich.console import Console

from ftp import allocator, checkpoints
from ftp.config import Bound, Evaluation, Pipeline, Stage
from ftp.contexts import EvalContext, TrainContext
from ftp.data import Prepared, combine, mix_summary, prepare, stream_records
from ftp.distributed import ranks
from ftp.errors import FtpError, RunError, UserError
from ftp.memory import model_on_gpu, release
from ftp.progress import make_progress_callback
from ftp.rundir import RunDir
from ftp.runlock import RunLock, owner_info
from ftp.signals import STOP, Interrupted, handling_signals
from ftp.training_guard import NonFiniteError, make_guard_callback

# Set on an error `Runner.blamed` has worded, so that no later step words it again.
_NAMED = "ftp_step_named"

PACKAGES = ("ftp", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "pluggy",
            "pydantic")
BASE_STAGE = "base"
MANIFEST = "manifest.json"


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def refuse_rehearsal(run_dir: RunDir) -> None:
    """Refuse to resume ``run_dir`` when it holds a rehearsal (which is rerun, never resumed).

    Raises:
        UserError: naming the folder.

    """
    if run_dir.status().get("rehearsal"):
        raise UserError(f"{run_dir.path} holds a rehearsal (--rehearse), which is not "
                        "resumed: rehearse again, or run the pipeline itself")


class Runner:
    """Runs one pipeline into one run directory."""

    #: At most this many rows of each evaluation's data (None: all); a rehearsal caps them.
    eval_rows: int | None = None

    def __init__(self, pipeline: Pipeline, run_dir: RunDir, console: Console | None = None,
                 from_stage: str | None = None, resume: bool = False,
                 overrides: tuple[str, ...] = ()) -> None:
        self.pipeline = pipeline
        self.run_dir = run_dir
        # Only the main process of a distributed run prints, writes, evaluates and saves.
        self.place = ranks.here()
        self.main = self.place.is_main
        self.console = console or Console(quiet=not self.main)
        self.plugins = pipeline.plugins
        self.timings: dict[str, float] = {}
        self.results: dict[str, Any] = {"pipeline": pipeline.name, "stages": {}}
        self.data: dict[str, Prepared] = {}
        self.train_summaries: dict[str, dict[str, Any]] = {}
        self.current_step = "start"
        self.completed: list[str] = []
        self.from_index = 0
        self.overrides = overrides
        self.resume = resume
        # Resuming where stage `from_index` is trained and saved but not all evaluated.
        self.start_trained = False
        self.parts: dict[str, str] = {}  # checkpoints.identity of the whole pipeline
        self.tokenizer_fp = ""
        if from_stage is not None:
            self.from_index = self._resume_point(from_stage)

    def _resume_point(self, from_stage: str) -> int:
        """Check that an earlier run can be resumed at ``from_stage``; keep its results."""
        from ftp.suggest import did_you_mean

        names = [s.name for s in self.pipeline.stages]
        if from_stage not in names:
            raise UserError(f"--from-stage: no stage named {from_stage!r}"
                            f"{did_you_mean(from_stage, names)}; stages: {', '.join(names)}")
        index = names.index(from_stage)
        if index == 0:
            raise UserError("--from-stage names the first stage: rerun the whole pipeline "
                            "with --overwrite instead")
        previous = self.pipeline.stages[index - 1]
        if not (self._stage_model_dir(previous) / "config.json").is_file():
            raise UserError(f"cannot resume at {from_stage!r}: {self._stage_model_dir(previous)} "
                            f"does not hold stage {previous.name!r}'s model")
        try:
            earlier = json.loads(self.run_dir.file("results.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            earlier = {}
        kept = [BASE_STAGE, *names[:index]]
        self.results["stages"] = {k: v for k, v in earlier.get("stages", {}).items()
                                  if k in kept}
        self.completed = names[:index]
        return index

    # -- resuming -------------------------------------------------------------------------

    def _model_dir(self, index: int) -> Path:
        """Where stage ``index``'s model is saved: the final model for the last stage."""
        if index == len(self.pipeline.stages) - 1:
            return self.run_dir.file("model")
        return self._stage_model_dir(self.pipeline.stages[index])

    def _evaluated(self, ev: Evaluation, stage: str) -> bool:
        return ev.name in self.results["stages"].get(stage, {})

    def _plan_resume(self) -> None:
        """Find the first unfinished step of an earlier run; keep what it finished.

        Raises:
            UserError: when the run finished, or its pipeline's options changed since.

        """
        state = self.run_dir.state()
        refuse_rehearsal(self.run_dir)
        if state == "finished":
            raise UserError(f"{self.run_dir.path} holds a finished run; nothing to resume "
                            "(--overwrite starts it over)")
        before = int(self.run_dir.status().get("processes", 1))
        if before != self.place.world_size:
            # Another count changes the global batch and each process's share of the data:
            # the continuation would not be the run that was checkpointed.
            raise UserError(f"{self.run_dir.path} was trained by {before} process(es) and this "
                            f"resume has {self.place.world_size}; resume it with the same count "
                            f"(ftp run ... --nproc {before} --resume, or ftp resume)")
        try:
            earlier = json.loads(self.run_dir.file("results.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            earlier = {}
        self.results["stages"] = dict(earlier.get("stages", {}))
        if "training" in earlier:  # per-stage counts (tokenized, skipped rows)
            self.results["training"] = dict(earlier["training"])
        stages = self.pipeline.stages
        start = 0
        for i, stage in enumerate(stages):
            trained = (self._model_dir(i) / "config.json").is_file()
            pending = [e for e in self.pipeline.evaluations
                       if stage.name in e.after_stages and not self._evaluated(e, stage.name)]
            if not trained or pending:
                start, self.start_trained = i, trained
                break
            self.completed.append(stage.name)
        else:
            start, self.start_trained = len(stages) - 1, True
        self.from_index = start
        self._check_options(start)
        self.console.print(f"[bold]resuming[/] {state} run at {self._resume_label()}",
                           highlight=False)

    def _resume_label(self) -> str:
        stage = self.pipeline.stages[self.from_index].name
        return f"stage {stage!r} ({'evaluations' if self.start_trained else 'training'})"

    def _recorded_parts(self) -> dict[str, str]:
        try:
            data = json.loads(self.run_dir.file(MANIFEST).read_text(encoding="utf-8"))
            return dict(data.get("identity", {}))
        except (OSError, ValueError):
            return {}

    def _check_options(self, upto: int) -> None:
        """Before loading anything: the pipeline's options up to ``upto`` are unchanged."""
        recorded = self._recorded_parts()
        if not recorded:
            return
        current = checkpoints.identity(self.pipeline, upto, {}, "")
        comparable = [k for k in current if k != "tokenizer" and not k.endswith("records")]
        checkpoints.refuse_if_changed({k: recorded.get(k, "") for k in comparable},
                                      {k: current[k] for k in comparable}, "the run")

    def _check_identity(self, tokenizer: Any) -> None:
        """Record what decides training (manifest.json); on resume, refuse what changed."""
        from ftp.cache import tokenizer_fingerprint

        fps = {n: d.fingerprint for n, d in self.data.items()}
        self.tokenizer_fp = tokenizer_fingerprint(tokenizer)
        self.parts = checkpoints.identity(self.pipeline, len(self.pipeline.stages) - 1, fps,
                                          self.tokenizer_fp)
        if self.resume:
            recorded = self._recorded_parts()
            upto = checkpoints.identity(self.pipeline, self.from_index, fps, self.tokenizer_fp)
            if recorded:
                checkpoints.refuse_if_changed({k: recorded.get(k, "") for k in upto}, upto,
                                              "the run")
        self.run_dir.write_json(MANIFEST, {"identity": self.parts,
                                           "versions": checkpoints.versions()})

    def _checkpoint_to_resume(self, stage: Stage, folder: Path, parts: dict[str, str]
                              ) -> Path | None:
        """The newest good checkpoint of the stage being resumed, checked against its manifest."""
        def warn(line: str) -> None:
            self.console.print(f"  [yellow]warning:[/] {line}", highlight=False)

        found = checkpoints.newest_good(folder, warn)
        step = checkpoints.step_of(found) if found else 0
        checkpoints.discard_after(folder, step)  # damaged newer ones, or from a retrain
        if found is None:
            self.console.print(f"  no checkpoint of stage {stage.name!r}: it starts over",
                               highlight=False)
        else:
            made = checkpoints.manifest(found)
            checkpoints.refuse_if_changed(made.get("identity", {}), parts, f"checkpoint {found}")
            now = checkpoints.versions()
            moved = [f"{k} {v} → {now.get(k)}" for k, v in made.get("versions", {}).items()
                     if now.get(k) != v]
            if moved:
                warn(f"versions changed since the checkpoint: {', '.join(moved)}; the "
                     "continuation may differ slightly from an uninterrupted run")
            self.console.print(f"  resuming stage {stage.name!r} at step {step} from {found}",
                               highlight=False)
        self._trim_metrics(stage.name, step)
        return found

    def _trim_metrics(self, stage: str, step: int) -> None:
        """Drop metrics the resumed stage will log again, so each step is recorded once."""
        path = self.run_dir.file("metrics.jsonl")
        if not path.is_file():
            return
        later = {s.name for s in self.pipeline.stages[self.from_index + 1:]}
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # half a line, written as the process died
            name = record.get("stage")
            if name in later:
                continue
            if name == stage and not (isinstance(record.get("step"), int)
                                      and 0 < record["step"] <= step):
                continue
            kept.append(line + "\n")
        self.run_dir.write_text("metrics.jsonl", "".join(kept))

    # -- steps ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def step(self, label: str, bound: Bound | None = None) -> Iterator[None]:
        """Announce, time and attribute one step of the run."""
        self.current_step = label
        self.console.print(f"[bold cyan]▶[/] {label}", highlight=False)
        start = time.perf_counter()
        try:
            yield
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            new = self.blamed(label, bound, exc)
            if new is exc:
                raise
            raise new from exc
        took = time.perf_counter() - start
        self.timings[label] = round(took, 2)
        self.console.print(f"  [dim]done in {took:.1f}s[/]", highlight=False)

    def blamed(self, label: str, bound: Bound | None, exc: Exception) -> Exception:
        """``exc`` as step ``label`` reports it: one line naming the step and ``bound``.

        Also for a step's error that surfaces inside a later step (a streamed dataset's
        loader fails while its rows are formatted): it is named once, by its own step.
        """
        if getattr(exc, _NAMED, False) or (isinstance(exc, FtpError)
                                            and not isinstance(exc, UserError)):
            return exc
        self.current_step = label
        who = ""
        if bound is not None:
            e = bound.entry
            who = f" [{e.kind.replace('_', ' ')} {e.name!r}, plugin {e.plugin!r}]"
        if isinstance(exc, UserError):
            new: Exception = type(exc)(f"{label}{who}: {exc}")
        else:
            text = str(exc).strip().splitlines()
            first = text[0] if text else ""
            new = RunError(f"{label}{who}: {type(exc).__name__}: {first}")
        setattr(new, _NAMED, True)
        return new

    # -- the run --------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Run every step; return results.json's contents.

        Raises:
            FtpError: ``UserError`` or ``RunError`` with one line naming the failed step.

        """
        timeout = self.pipeline.distributed.timeout_minutes if self.pipeline.distributed \
            else 30.0
        ranks.start(timeout)  # every process joins; the main one has made the folder
        lock = RunLock(self.run_dir.path)
        try:
            if self.main:
                lock.acquire()  # before anything is written: a refused run leaves it alone
                if self.resume:
                    self._plan_resume()
            # The other processes continue where the main one decided.
            (self.from_index, self.start_trained, self.completed, self.results) = ranks.share(
                (self.from_index, self.start_trained, self.completed, self.results))
            with handling_signals():
                return self._run_owned()
        finally:
            self.run_dir.stop_heartbeat()
            if self.main:
                lock.release()
            ranks.finish()

    def _run_owned(self) -> dict[str, Any]:
        started = time.perf_counter()
        self.run_dir.start(pipeline=self.pipeline.name, **owner_info(),
                           overrides=list(self.overrides), processes=self.place.world_size,
                           **({"resumed_at": self._resume_label()} if self.resume else {}))
        self.run_dir.start_heartbeat()
        try:
            self._write_inputs()
            self._notify("ftp_pipeline_start", pipeline=self.pipeline,
                         run_dir=self.run_dir.path)
            self._run_steps()
            self._judge_requirements()
            total = round(time.perf_counter() - started, 2)
            self.results["status"] = "finished"
            self.run_dir.write_json("results.json", self.results)
            self._write_summary("finished", total)
            self.current_step = "finish"
            self._notify("ftp_pipeline_finish", run_dir=self.run_dir.path,
                         results=self.results)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):  # no handler installed (not main thread)
                exc = Interrupted(2)
            if isinstance(exc, Interrupted):
                self._mark_interrupted(exc)
            else:
                self.run_dir.set_status("failed", failed_step=self.current_step, error=str(exc),
                                        timings=self.timings, completed_stages=self.completed,
                                        resume=self.resume_command())
            exc = self._with_resume_hint(exc)
            self.run_dir.write_json("results.json", self.results)
            self._write_summary("interrupted" if isinstance(exc, Interrupted) else "failed",
                                time.perf_counter() - started, str(exc))
            self._write_report()
            with contextlib.suppress(Exception):
                self._notify("ftp_pipeline_error", error=exc, step=self.current_step,
                             run_dir=self.run_dir.path)
            raise exc from exc.__cause__
        # Last: a run is called finished only once everything above is written.
        # Observer hooks that raised were skipped; run.json says which, so the run explains itself.
        failures = {"plugin_hook_failures": [str(f) for f in self.plugins.hook_failures]}
        self.run_dir.set_status("finished", seconds=total, timings=self.timings,
                                **(failures if self.plugins.hook_failures else {}))
        self._write_report()
        return self.results

    def _notify(self, hook: str, **kwargs: Any) -> None:
        """Call an observer hook, in the main process only (once per run, not per process)."""
        if self.main:
            self.plugins.call(hook, **kwargs)

    def resume_command(self) -> str:
        """The command that continues this run."""
        return f"ftp resume {self.run_dir.path.absolute()}"

    def _mark_interrupted(self, exc: Interrupted) -> None:
        stage_dirs = [self.run_dir.file(f"stages/{s.name}/checkpoints")
                      for s in self.pipeline.stages]
        newest = exc.checkpoint or next(
            (str(c[-1]) for c in map(checkpoints.complete, reversed(stage_dirs)) if c), None)
        step = checkpoints.step_of(Path(newest)) if newest else None
        self.run_dir.set_status("interrupted", signal=str(exc).split()[-1],
                                interrupted_step=self.current_step,
                                checkpoint=str(Path(newest).absolute()) if newest else None,
                                checkpoint_step=step, timings=self.timings,
                                completed_stages=self.completed, resume=self.resume_command())

    def _with_resume_hint(self, exc: BaseException) -> BaseException:
        """Add how to resume when earlier stages finished and a later one failed."""
        if not isinstance(exc, RunError) or isinstance(exc, NonFiniteError):
            return exc
        done = (f"stages {', '.join(repr(n) for n in self.completed)} finished and are kept; "
                if self.completed else "")
        hint = f"\n  {done}after fixing the problem, resume with: {self.resume_command()}"
        new = type(exc)(f"{exc}{hint}")
        new.__cause__ = exc.__cause__
        return new

    def _prepare_data(self) -> None:
        """Load and format every dataset in use; combine those a stage trains on together."""
        p = self.pipeline
        used = {name for s in p.stages for name in s.datasets}
        used |= {e.section.data for e in p.evaluations if e.section.data}
        for name in [n for n in p.datasets if n in used]:
            ds = p.datasets[name]
            # The main process first: a download or a cache is filled once.
            with self.step(f"load data {name!r}", ds.loader), \
                    ranks.main_first(f"load data {name!r}"):
                # Streamed: only the first row is read here; the rest as they are formatted.
                records = stream_records(ds, p.base_dir, p.seed, blame=functools.partial(
                    self.blamed, f"load data {name!r}", ds.loader))
            with self.step(f"format data {name!r}", ds.format):
                # Consumed: each raw row is let go once formatted (packed rows remain).
                self.data[name] = prepare(ds, records, p.base_dir, p.seed, consume=True)
                del records
            for warning in self.data[name].warnings:
                self.console.print(f"  [yellow]warning:[/] {warning}", highlight=False)
            d = self.data[name]
            trained = name in {n for s in p.stages for n in s.datasets}
            # A dataset only evaluators read has no training rows to speak of.
            counts = (f"{len(d.train)} train / {len(d.eval)} held-out rows" if trained or d.eval
                      else f"{len(d.train)} rows, for evaluation only")
            self.console.print(f"  {counts}, {d.shape}", highlight=False)
            self._notify("ftp_dataset_ready", name=name, train=d.train, eval=d.eval or None)
        for stage in p.stages:
            if stage.data in self.data:
                continue  # one dataset, or the same combination as an earlier stage
            how = "mix" if stage.weights else "concatenate"
            with self.step(f"{how} data {stage.data!r} for stage {stage.name!r}"):
                parts = [self.data[n] for n in stage.datasets]
                d = combine(stage.data, parts, stage.weights, p.seed)
            self.data[stage.data] = d
            self.console.print(f"  {mix_summary(d.fingerprint['train_rows_from'])} = "
                               f"{len(d.train)} train / {len(d.eval)} held-out rows",
                               highlight=False)
        # Mixture labels hold '+', which dataset names cannot: the keys never collide.
        self.run_dir.write_json("data.json", {n: d.fingerprint for n, d in self.data.items()})

    def _run_steps(self) -> None:
        p = self.pipeline
        self._prepare_data()

        provider = p.model.build()
        with self.step("load tokenizer", p.model):
            tokenizer = provider.load_tokenizer()
        self._check_identity(tokenizer)

        first = self.from_index
        # Resuming at a trained stage's evaluations: its own saved model is the one to judge.
        init = self._model_dir(first) if self.start_trained else None
        model = self._load_for(p.stages[first], provider, init)
        loaded = first if init else first - 1
        self._notify("ftp_model_loaded", model=model, tokenizer=tokenizer,
                     stage=p.stages[loaded].name if loaded >= 0 else BASE_STAGE)
        if first == 0 and not self.start_trained and self.main:
            for ev in p.evaluations:
                if ev.section.before and not self._evaluated(ev, BASE_STAGE):
                    self._evaluate(ev, BASE_STAGE, model, tokenizer)
        ranks.barrier("the evaluations before training")

        for i in range(first, len(p.stages)):
            stage = p.stages[i]
            if not (i == first and self.start_trained):
                if i > first and (stage.method.cls.task
                                  != p.stages[i - 1].method.cls.task):
                    # A new head (e.g. a classifier after SFT): start from the saved LM.
                    del model
                    model = self._load_for(stage, provider, self._model_dir(i - 1))
                model = self._train_stage(stage, provider, model, tokenizer)
                # Saved before its evaluations: an evaluator that fails loses no training, and
                # a later failure resumes from here.
                last = i == len(p.stages) - 1
                if self.main:
                    self._save_model(provider, model, tokenizer, self._model_dir(i),
                                     "save model" if last else f"stage {stage.name!r}: save model")
            for ev in p.evaluations:
                if self.main and stage.name in ev.after_stages \
                        and not self._evaluated(ev, stage.name):
                    self._evaluate(ev, stage.name, model, tokenizer)
            # The others wait while the main process saves and evaluates: the next stage may
            # load the saved model.
            ranks.barrier(f"the end of stage {stage.name!r}")
            self.completed.append(stage.name)
            release(model_on_gpu(model))  # what the stage and its evaluations left behind

    def _stage_model_dir(self, stage: Stage) -> Path:
        return self.run_dir.file(f"stages/{stage.name}/model")

    def _load_for(self, stage: Stage, provider: Any, init_from: Path | None) -> Any:
        """Load the model a stage trains: the base model, or an earlier stage's saved one."""
        method = stage.method.build()
        options = method.model_options(self.data[stage.data].train)
        if init_from is None and self.from_index > 0:
            init_from = self._stage_model_dir(self.pipeline.stages[self.from_index - 1])
        where = f" from {init_from}" if init_from else ""
        _seed_everything(self.pipeline.seed)  # a new head's random init is seeded too
        with self.step(f"load model{where}", self.pipeline.model):
            return provider.load_model(stage.method.cls.task, init_from=init_from,
                                       **options)

    def _save_model(self, provider: Any, model: Any, tokenizer: Any, final: Path,
                    label: str) -> None:
        staging = final.with_name(final.name + ".partial")
        with self.step(label, self.pipeline.model):
            _require_finite(model)
            if staging.exists():
                shutil.rmtree(staging)
            provider.save(model, tokenizer, staging)
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)  # only a complete model folder carries the final name
        self.console.print(f"  model saved to {final}", highlight=False)

    def _train_stage(self, stage: Stage, provider: Any, model: Any, tokenizer: Any) -> Any:
        data = self.data[stage.data]
        stage_dir = self.run_dir.file(f"stages/{stage.name}")
        stage_dir.mkdir(parents=True, exist_ok=True)
        if stage.adapter is not None:
            label = f"stage {stage.name!r}: add {stage.adapter.type} adapter"
            with self.step(label, self.pipeline.model):
                model = provider.apply_adapter(model, stage.adapter)
        folder = stage_dir / "checkpoints"
        upto = checkpoints.identity(self.pipeline, self.pipeline.stages.index(stage),
                                    {n: d.fingerprint for n, d in self.data.items()},
                                    self.tokenizer_fp)
        resume_from = None
        if not self.main:
            pass  # the main process reads and tidies the checkpoints, and says which
        elif self.resume and stage is self.pipeline.stages[self.from_index]:
            resume_from = self._checkpoint_to_resume(stage, folder, upto)
        else:
            checkpoints.discard_after(folder, 0)  # an earlier attempt's, from the start
        resume_from = ranks.share(resume_from)
        progress = make_progress_callback(self.console, stage.name, self._log_metrics)
        guard = make_guard_callback(
            stage.name, folder, stage.policy, upto,
            checkpoints.step_of(resume_from) if resume_from else 0, self._log_metrics,
            lambda line: self.console.print(line, highlight=False))
        callbacks = [progress, guard]
        for extra in self.plugins.call("ftp_trainer_callbacks", stage=stage.name):
            callbacks.extend(extra)
        ctx = TrainContext(
            stage=stage.name,
            model=model,
            tokenizer=tokenizer,
            provider=provider,
            train=data.train,
            eval=data.eval or None,
            adapter=stage.adapter,
            output_dir=folder,
            seed=self.pipeline.seed,
            callbacks=callbacks,
            log=self._log_metrics,
            origins=data.train_origins,  # compact (`ftp.origins.Origins`), not copied
            on_bad_rows=data.on_bad_rows,
            resume_from=resume_from,
            distributed=self._distributed(),
        )
        method = stage.method.build()
        label = f"stage {stage.name!r}: train ({stage.method.entry.name})"
        STOP.training = True  # a signal from here on waits for a step boundary
        try:
            with self.step(label, stage.method):
                trained = method.train(ctx)
        finally:
            STOP.training = False
            progress.on_train_end(None, None, None)  # the bar, when training stopped early
            self._record_skipped(stage, ctx.skipped)
        self.train_summaries.setdefault(stage.name, {})["seconds"] = self.timings.get(label)
        if stage.adapter is not None:
            with self.step(f"stage {stage.name!r}: save and merge adapter", self.pipeline.model):
                if self.main:
                    provider.save_adapter(trained, stage_dir / "adapter")
                    if stage is self.pipeline.stages[-1]:
                        provider.save_adapter(trained, self.run_dir.file("adapter"))
                # Every process merges: the next stage trains on the same weights everywhere.
                trained = provider.merge_adapter(trained)
        self._notify("ftp_model_loaded", model=trained, tokenizer=tokenizer, stage=stage.name)
        return trained

    def _distributed(self) -> Any:
        """The ``[distributed]`` table a stage trains under; None in one process.

        Launched by hand without the table: DDP's defaults. A DeepSpeed JSON path is made
        absolute.
        """
        section = self.pipeline.distributed
        if not self.place.distributed:
            return None  # the Trainer takes a ddp_backend as a request to join a group
        if section is None:
            from ftp.distributed.config import DistributedSection

            return DistributedSection.model_validate({})
        ds = section.deepspeed
        if ds is not None and ds.config is not None:
            path = str((self.pipeline.base_dir / ds.config).absolute())
            section = section.model_copy(update={"deepspeed": ds.model_copy(
                update={"config": path})})
        return section

    def _evaluate(self, ev: Evaluation, stage: str, model: Any, tokenizer: Any) -> None:
        data = None
        if ev.section.data is not None:
            data = self.data[ev.section.data].split(ev.section.split)
            if self.eval_rows is not None:
                data = data[:self.eval_rows]
        evaluator = ev.evaluator.build()
        # The latest earlier result of this same evaluation (results keep evaluation order).
        earlier = [(name, by_eval[ev.name]) for name, by_eval in self.results["stages"].items()
                   if name != stage and ev.name in by_eval]
        previous_stage, previous = earlier[-1] if earlier else (None, None)
        ctx = EvalContext(stage=stage, model=model, tokenizer=tokenizer, data=data,
                          seed=self.pipeline.seed, previous=previous,
                          previous_stage=previous_stage, base_dir=self.pipeline.base_dir)
        when = "before training" if stage == BASE_STAGE else f"after {stage!r}"
        with self.step(f"evaluate {ev.name!r} {when}", ev.evaluator):
            result = evaluator.evaluate(ctx)
        del ctx, evaluator
        release(model_on_gpu(model))  # an evaluation's batches and logits are garbage now
        self.results["stages"].setdefault(stage, {})[ev.name] = result
        self.run_dir.write_json("results.json", self.results)
        for key, value in (result.get("metrics") or {}).items():
            if isinstance(value, int | float):
                self.console.print(f"  {key} = {value:.4g}", highlight=False)
        for sample in (result.get("samples") or [])[:5]:
            if "prompt" in sample and "answer" in sample:
                self.console.print(f"  [dim]Q:[/] {sample['prompt']}\n  [dim]A:[/] "
                                   f"{sample['answer']}", highlight=False)
        self._notify("ftp_evaluation_done", stage=stage, evaluator=ev.name, results=result)

    def _record_skipped(self, stage: Stage, skipped: dict[str, int]) -> None:
        """Count rows a method skipped with the dataset's other skipped rows, in data.json."""
        if not skipped:
            return
        d = self.data[stage.data]
        for reason, n in skipped.items():
            d.skipped[reason] = d.skipped.get(reason, 0) + n
        d.fingerprint["skipped"] = dict(sorted(d.skipped.items()))
        self.results.setdefault("training", {}).setdefault(stage.name, {})["skipped"] = \
            dict(skipped)
        self.run_dir.write_json("data.json", {n: p.fingerprint for n, p in self.data.items()})

    def _record_tokenized(self, record: dict[str, Any]) -> None:
        """Keep a method's ``tokenized`` counts (truncated, dropped...) in data.json and results."""
        stage = next((s for s in self.pipeline.stages if s.name == record.get("stage")), None)
        if stage is None or stage.data not in self.data:
            return
        counts = {k: v for k, v in record.items() if k not in ("stage", "event")}
        self.data[stage.data].fingerprint.setdefault("tokenized", {})[stage.name] = counts
        self.results.setdefault("training", {}).setdefault(stage.name, {})["tokenized"] = counts
        self.run_dir.write_json("data.json", {n: p.fingerprint for n, p in self.data.items()})

    def _log_metrics(self, record: dict[str, Any]) -> None:
        self.run_dir.append_metrics(record)
        if record.get("event") == "tokenized":
            self._record_tokenized(record)
        stage = record.get("stage")
        if stage:
            summary = self.train_summaries.setdefault(stage, {})
            for key in ("loss", "train_loss", "train_runtime", "tokens_per_second",
                        "tokens_seen", "eval_loss"):
                if key in record:
                    summary[key] = record[key]
            if isinstance(record.get("step"), int) and not record.get("event"):
                # The trainer's closing summary carries its final step; logged steps may stop
                # short of it (36 steps logged every 5 end at 35).
                summary["steps"] = max(record["step"], summary.get("steps", 0))

    # -- records --------------------------------------------------------------------------

    def _write_inputs(self) -> None:
        if not self.main:
            return  # the main process writes the run folder
        p = self.pipeline
        from ftp.masking import mask_toml

        # The file as given, secrets masked (the run folder is shared; the source is not).
        text = p.source.read_text(encoding="utf-8")
        self.run_dir.file("pipeline.toml").write_text(mask_toml(text), encoding="utf-8")
        resolved = {
            "source": str(p.source),
            "raw": p.raw,
            "model": {"provider": p.model.entry.name, **p.model.config.model_dump()},
            "data": {
                n: {**d.section.model_dump(exclude={"format_options"}),
                    **d.loader.config.model_dump(),
                    "format_options": d.format.config.model_dump()}
                for n, d in p.datasets.items()
            },
            "stages": [
                {"name": s.name, "method": s.method.entry.name, "data": s.data,
                 "datasets": s.datasets, "weights": s.weights,
                 "adapter": s.adapter.model_dump() if s.adapter else None,
                 "checkpoints": dataclasses.asdict(s.policy),
                 **s.method.config.model_dump()}
                for s in p.stages
            ],
            "evaluate": [
                {**e.section.model_dump(), **e.evaluator.config.model_dump(), "name": e.name}
                for e in p.evaluations
            ],
            # Every loaded plugin's settings, defaults filled in ([plugins.NAME]).
            "plugins": {n: cfg.model_dump(mode="json") for n, cfg in p.plugin_settings.items()},
        }
        self.run_dir.write_json("resolved.json", resolved)
        self.run_dir.write_json("environment.json", {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "packages": {name: _version(name) for name in PACKAGES},
            "plugins": [info.as_dict() for info in self.plugins.infos.values()],
            # The C allocator really mapped into this process (ftp.allocator), not the one asked.
            "allocator": allocator.record(),
        })

    def _judge_requirements(self) -> None:
        """Judge every ``require`` (ftp.gates) on the results; record and print each."""
        if not self.main:
            return  # the others hold no evaluations to judge
        from ftp.gates import describe, judge

        judged: list[dict[str, Any]] = []
        for ev in self.pipeline.evaluations:
            if ev.section.require:
                judged += judge(ev.name, ev.section.require, self.results["stages"])
        if not judged:
            self.results.pop("requirements", None)
            return
        self.results["requirements"] = judged
        held = sum(r["passed"] for r in judged)
        colour = "green" if held == len(judged) else "red"
        self.console.print(f"[bold {colour}]requirements: {held} of {len(judged)} hold[/]",
                           highlight=False)
        for record in judged:
            mark = "[green]✓[/]" if record["passed"] else "[red]✗ FAILED[/]"
            # One line each, however narrow the log: CI greps for them.
            self.console.print(f"  {mark} {describe(record)}", highlight=False, soft_wrap=True)

    def _write_report(self) -> None:
        """report.html, from the folder's files; a report that cannot be built fails no run."""
        from ftp.report import write_report

        if not self.main:
            return  # the main process writes the run folder
        try:
            write_report(self.run_dir.path)
        except Exception as exc:  # noqa: BLE001 — the run's own outcome matters more
            self.console.print(f"  [yellow]warning:[/] report.html not written: "
                               f"{type(exc).__name__}: {exc}", highlight=False)

    def _write_summary(self, status: str, seconds: float, error: str = "") -> None:
        from ftp.summary import render_summary

        text = render_summary(self.pipeline, status, seconds, self.timings, self.train_summaries,
                              self.results, error, self.run_dir.path)
        self.run_dir.write_text("summary.md", text)


def _require_finite(model: Any) -> None:
    """Refuse to save a model with NaN or inf weights (it would load, and silently be junk).

    Raises:
        RunError: naming the first bad weight.

    """
    import torch

    for name, param in getattr(model, "named_parameters", lambda: [])():
        if param.is_floating_point() and not torch.isfinite(param).all():
            raise RunError(f"the model's weight {name} holds NaN or inf; not saving it")


def _seed_everything(seed: int) -> None:
    """Seed Python's and torch's generators before anything random (a new head) is made."""
    import random

    import torch

    random.seed(seed)
    torch.manual_seed(seed)


def default_run_dir(pipeline: Pipeline, output_dir: str | None) -> Path:
    """``--output-dir``, else ``[pipeline] output_dir``, else ``runs/NAME`` in the working dir."""
    if output_dir:
        return Path(output_dir)
    if pipeline.file.pipeline.output_dir:
        out = Path(pipeline.file.pipeline.output_dir)
        return out if out.is_absolute() else pipeline.base_dir / out
    return Path("runs") / pipeline.name
