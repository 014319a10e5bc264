"""Base classes for the kinds of component a plugin can provide (the table is `ftp.kinds`).

A component is a class with a ``name``, a one-line docstring, and a nested pydantic ``Config``
that rejects unknown keys. ftp builds the ``Config`` from the user's pipeline file and hands
it to the constructor; the component does its work in the method its kind defines.

Nothing here imports torch or transformers: components import heavy libraries inside their
methods, so that listing and validating stay fast.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from ftp.contexts import EvalContext, LoadContext, TrainContext

if TYPE_CHECKING:
    from ftp.distributed.config import LaunchPlan


class StrictConfig(BaseModel):
    """A component's options: unknown keys are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class Shape:
    """The record shapes a format can produce (TRL's dataset types, plus labelled text).

    - ``language_modeling``: ``{"text": str}``
    - ``prompt_completion``: ``{"prompt": str, "completion": str}``
    - ``conversational``: ``{"messages": [{"role": str, "content": str}, ...]}``
    - ``preference``: ``{"prompt": ..., "chosen": ..., "rejected": ...}``
    - ``unpaired_preference``: ``{"prompt": ..., "completion": ..., "label": bool}``
    - ``labelled_text``: ``{"text": str, "label": str | int}``
    - ``prompt_only``: ``{"prompt": str | [messages], ...}``: a prompt to complete, with the
      row's other fields kept (what rewards compare the completion with, e.g. ``answer``)
    """

    LANGUAGE_MODELING = "language_modeling"
    PROMPT_COMPLETION = "prompt_completion"
    CONVERSATIONAL = "conversational"
    PREFERENCE = "preference"
    UNPAIRED_PREFERENCE = "unpaired_preference"
    LABELLED_TEXT = "labelled_text"
    PROMPT_ONLY = "prompt_only"


class Component:
    """Common base: a name, a kind, and validated options in ``self.config``."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""

    class Config(StrictConfig):
        """No options."""

    def __init__(self, config: StrictConfig | None = None) -> None:
        self.config = config if config is not None else self.Config()

    def check_files(self, base_dir: Path) -> list[tuple[str, str]]:
        """Cheap checks of the local files and folders the options name, for ``ftp validate``.

        Run on every pipeline check, before anything heavy: look at the disk only (no model,
        no torch). Relative data paths resolve against ``base_dir``, the pipeline file's folder.

        Returns:
            ``(option, message)`` pairs, e.g. ``("path", "data file not found: ...")``;
            none when everything named is there.

        """
        return []

    @classmethod
    def summary(cls) -> str:
        """The first line of the class docstring."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


class DataLoader(Component):
    """Reads records (plain dicts) from somewhere: files, the Hub, a database."""

    kind = "data_loader"

    def load(self, ctx: LoadContext) -> list[dict[str, Any]]:
        """Return the records. Raise ``UserError`` for a missing file or a bad row."""
        raise NotImplementedError

    def rows(self, ctx: LoadContext) -> Iterator[dict[str, Any]]:
        """Yield the records one at a time, as `load` would return them.

        ftp reads a dataset through this: each record is formatted (and let go) before the
        next is read, so a loader that overrides it with a generator never holds its whole
        file as Python objects. By default it yields what `load` returns, so a loader that
        only returns a list works unchanged. A loader that overrides it should make `load`
        ``list(self.rows(ctx))``. Errors are raised as the records are read.
        """
        yield from self.load(ctx)


class Format(Component):
    """Turns a loader's records into one of the shapes in `Shape`."""

    kind = "format"
    produces: ClassVar[str] = Shape.LANGUAGE_MODELING

    def convert(self, record: dict[str, Any]) -> dict[str, Any]:
        """Convert one record. Raise ``ValueError`` with a short reason for a bad one."""
        raise NotImplementedError

    def notes(self) -> list[str]:
        """Lines to show once every row of a dataset is converted; none by default.

        For what a format noticed across rows without refusing them, e.g. keys it ignored,
        with counts. ftp shows each as a warning naming the dataset. One instance converts a
        dataset's rows (and its ``eval_path`` rows), so counts kept on ``self`` add up.
        """
        return []


class ModelProvider(Component):
    """Turns a model name into a model and tokenizer; applies adapters; saves."""

    kind = "model_provider"

    def load_tokenizer(self) -> Any:
        """Return the tokenizer."""
        raise NotImplementedError

    def load_model(self, task: str, init_from: Path | None = None, **options: Any) -> Any:
        """Return the model for ``task`` (e.g. ``causal-lm``), from ``init_from`` when given.

        ``options`` come from ``Method.model_options``, e.g. ``num_labels`` and ``id2label``
        for ``sequence-classification``.
        """
        raise NotImplementedError

    def apply_adapter(self, model: Any, adapter: Any) -> Any:
        """Wrap ``model`` with the adapter described by an ``AdapterSection``."""
        raise NotImplementedError

    def save_adapter(self, model: Any, directory: Path) -> None:
        """Save only the trained adapter of an adapter-wrapped ``model``."""
        raise NotImplementedError

    def merge_adapter(self, model: Any) -> Any:
        """Fold a trained adapter into the base weights; a plain model passes through."""
        return model

    def save(self, model: Any, tokenizer: Any, directory: Path) -> None:
        """Save a folder that plain ``transformers`` loads (``from_pretrained``)."""
        raise NotImplementedError

    def rehearsal_model(self, directory: Path) -> tuple[dict[str, Any], str]:
        """Write a tiny random model of the same architecture and tokenizer (``--rehearse``).

        Returns:
            The ``[model]`` options that load it instead of the real one, and a line saying
            what it is (architecture, layers, sizes).

        """
        from ftp.errors import UserError

        raise UserError(f"model provider {self.name!r} cannot build a model for a rehearsal")


#: The label of a token that carries no loss (the convention of transformers and PyTorch).
IGNORE_INDEX = -100


@dataclass
class TokenSequence:
    """One token sequence a model trains on.

    Attributes:
        input_ids: The token ids.
        labels: Per token, the id the loss trains the model to produce there, or
            `IGNORE_INDEX` where no loss is taken (prompt tokens, say).
        name: Which sequence of the example this is, e.g. ``chosen`` / ``rejected``;
            empty for an example of one sequence.

    """

    input_ids: list[int]
    labels: list[int]
    name: str = ""

    @property
    def trained(self) -> int:
        """How many tokens carry loss."""
        return sum(lab != IGNORE_INDEX for lab in self.labels)


@dataclass
class TokenizedExample:
    """One record as a method trains on it: its sequences and what happened on the way.

    Attributes:
        sequences: The token sequences (two for a preference pair).
        length: The longest sequence's length before truncation.
        truncated: Whether ``max_length`` (or the like) cut the record.
        dropped: Whether training leaves the record out (nothing to learn after truncation).
        label: The class label, for methods that learn one per record (classifiers).

    """

    sequences: list[TokenSequence] = field(default_factory=list)
    length: int = 0
    truncated: bool = False
    dropped: bool = False
    label: str | None = None


class Method(Component):
    """A training method: takes a model and formatted data, returns the trained model."""

    kind = "method"
    #: Shapes of data this method trains on; checked at validation.
    accepts: ClassVar[frozenset[str]] = frozenset()
    #: Which model head the provider loads for this method.
    task: ClassVar[str] = "causal-lm"
    #: Whether it can train under DeepSpeed ZeRO-3 (weights sharded across processes); a
    #: method that reads or changes whole weights itself says False, and is refused there.
    zero3: ClassVar[bool] = True
    #: Whether it trains in several processes on CPU (DDP over gloo); a rehearsal
    #: (``ftp run --rehearse``) of a method that says False runs in one process, and says so.
    cpu_processes: ClassVar[bool] = True

    @classmethod
    def starts_from(cls) -> frozenset[str]:
        """Tasks of a previous stage's model this method can continue from (for chains)."""
        return frozenset({cls.task})

    def model_options(self, train: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Extra options for ``ModelProvider.load_model`` (e.g. a classifier's labels)."""
        return {}

    def train(self, ctx: TrainContext) -> Any:
        """Train ``ctx.model`` and return it (possibly still wrapped in an adapter)."""
        raise NotImplementedError

    def head_chunk(self, model_type: str) -> int | None:
        """Positions a chunk, if this method never holds a step's logits over the vocabulary.

        A method that projects onto the vocabulary and takes its loss a chunk of positions at
        a time (for models of ``model_type``, a transformers ``config.model_type``) returns the
        chunk's size, so that ``ftp plan`` estimates one chunk's logits instead of a whole
        step's. Default None: the method holds the logits of every position it scores.
        """
        return None

    def tokenize_examples(self, tokenizer: Any, records: Sequence[dict[str, Any]]
                          ) -> list[TokenizedExample] | None:
        """``records`` tokenized exactly as `train` would, for ``ftp data preview/inspect``.

        Optional: the default returns None ("cannot show"), and ftp then falls back to plain
        token counts. Implement it without loading a model; only the tokenizer is given.
        """
        return None


class Evaluator(Component):
    """Judges a model: returns metrics (and samples) as a JSON-serialisable dict."""

    kind = "evaluator"
    #: Shapes of data this evaluator reads; empty when it needs no dataset.
    accepts: ClassVar[frozenset[str]] = frozenset()
    #: Whether the evaluator needs a dataset at all.
    needs_data: ClassVar[bool] = False
    #: Model tasks it can judge (a classifier cannot generate text).
    tasks: ClassVar[frozenset[str]] = frozenset({"causal-lm"})
    #: The metric names ``evaluate`` reports (its ``"metrics"`` keys); ``[[evaluate]]
    #: require`` is checked against them when a pipeline is validated. A name may hold
    #: ``*`` wildcards (``"mmlu_*/acc"``; ``fnmatch`` rules) where only part of it is known
    #: before running. Empty: not declared, and a misspelt name is only found after the run
    #: (as a failed requirement).
    metric_names: ClassVar[tuple[str, ...]] = ()

    def reported_metrics(self, base_dir: Path | None = None) -> tuple[str, ...]:
        """The metric names this evaluator reports with its options (default `metric_names`).

        Override when options decide which metrics exist (a metric per configured reward).
        Names may hold ``*`` wildcards; return ``("*",)`` or nothing where none can be known.

        Args:
            base_dir: The pipeline file's folder, against which relative paths in the
                options resolve (None where unknown).

        """
        return self.metric_names

    def evaluate(self, ctx: EvalContext) -> dict[str, Any]:
        """Return results, e.g. ``{"metrics": {...}, "samples": [...]}``."""
        raise NotImplementedError



class Reward(Component):
    """Scores completions: a float per completion, higher is better (GRPO maximises it).

    The API is batched, for speed: one call scores a whole generation batch.
    """

    kind = "reward"

    def score(self, prompts: list[Any], completions: list[str],
              rows: list[dict[str, Any]]) -> list[float | None]:
        """Score each completion.

        Args:
            prompts: Each completion's prompt, as the record holds it: a string, or a list of
                ``{"role", "content"}`` messages.
            completions: The generated text of each completion (without the prompt).
            rows: Each completion's record: its other fields (``answer``, say) are what a
                reward compares the completion with.

        Returns:
            One float per completion; None where the reward does not apply to that row
            (it is then left out of the weighted sum, as TRL does).

        """
        raise NotImplementedError


class Launcher(Component):
    """Starts the processes of a distributed run (``[distributed] launcher``).

    Every process runs ftp's own command line again (``python -m ftp ARGS``) with the
    variables torch's launchers set (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR...), so that
    ftp knows it was launched and does not launch again. A Slurm, Ray or SkyPilot launcher
    is a plugin that starts them its own way.
    """

    kind = "launcher"

    def launch(self, plan: LaunchPlan, args: list[str]) -> int:
        """Start this node's processes, wait for all of them, and return the exit code.

        Args:
            plan: Processes per node, nodes, this node's rank, rendezvous, timeout.
            args: ftp's command line after ``ftp`` (``["run", "pipeline.toml", ...]``).

        Returns:
            0 when every process succeeded, else the exit code of the first that failed
            (it has printed its own error).

        Raises:
            ftp.errors.RanksStopped: a process was killed (a signal) and the others were
                stopped; the message names the rank and the cause.

        """
        raise NotImplementedError


class ComponentRef(BaseModel):
    """A component named inside another component's options, with its own options.

    For example GRPO's ``rewards = [{ reward = "regex", weight = 1.0, pattern = "..." }]``:
    each table names a component of kind `kind` by the kind's key (``reward``); the other
    keys, except those a subclass declares (``weight``), are that component's options. ftp
    checks them against the named component's ``Config`` while validating the pipeline, like
    any section's, and `build` then instantiates it.
    """

    model_config = ConfigDict(extra="allow", protected_namespaces=())
    #: The kind of component referred to (a `ftp.kinds.Kind` name).
    kind: ClassVar[str] = ""
    _bound: Any = PrivateAttr(None)

    def options(self) -> dict[str, Any]:
        """The named component's options: the keys this class does not declare."""
        return dict(self.model_extra or {})

    def bind(self, entry: Any, config: StrictConfig) -> None:
        """Record the registry entry and validated options (done by ftp while validating)."""
        self._bound = (entry, config)

    @property
    def plugin(self) -> str:
        """The plugin that provides the named component ('' before validation)."""
        return self._bound[0].plugin if self._bound else ""

    def build(self) -> Component:
        """Instantiate the named component with its validated options."""
        if self._bound is None:
            raise RuntimeError(f"{type(self).__name__} used before the pipeline was validated")
        entry, config = self._bound
        return entry.cls(config)


class RewardRef(ComponentRef):
    """One entry of a method's ``rewards`` list: a reward, its weight, and its options."""

    kind: ClassVar[str] = "reward"

    reward: str = Field(description="The reward's name (`ftp components reward`).")
    weight: float = Field(1.0, description="Its weight in the summed reward.")
    name: str | None = Field(None, description="What logs and results call it (e.g. "
                             "'format'); default: the reward's name.")

    @property
    def label(self) -> str:
        """What logs and results call this entry: ``name``, else the reward's name."""
        return self.name or self.reward

    def build(self) -> Reward:
        """Instantiate the reward with its validated options."""
        reward = super().build()
        assert isinstance(reward, Reward)  # the registry accepts only Reward subclasses
        return reward


def unique_labels(refs: list[RewardRef]) -> list[RewardRef]:
    """``refs``, checked to have distinct labels (a pydantic field validator's body).

    Raises:
        ValueError: naming the label used twice, and how to tell the entries apart.

    """
    seen: set[str] = set()
    for ref in refs:
        if ref.label in seen:
            raise ValueError(f"two rewards are called {ref.label!r}: give one a distinct "
                             "`name` (what logs and results call it)")
        seen.add(ref.label)
    return refs
