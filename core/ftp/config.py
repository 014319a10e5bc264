"""The pipeline file: parsed, validated in two passes, cross-checked, every problem at once.

Pass 1 checks the file's shape (``[pipeline]``, ``[model]``, ``[data.NAME]``, ``[[stages]]``,
``[[evaluate]]``, ``[plugins.NAME]``) against the models below. Pass 2 checks each section's
remaining keys against the ``Config`` of the component it names, and each ``[plugins.NAME]``
table against the settings that plugin declares. Cross-checks then follow the references
between sections. Problems from all three are collected and raised together as a
`ConfigError`, each with its TOML path.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from ftp.checkpoints import DEFAULT_EVERY, DEFAULT_KEEP, Policy, parse_every
from ftp.components import (
    Component,
    ComponentRef,
    DataLoader,
    Evaluator,
    Format,
    Method,
    ModelProvider,
    StrictConfig,
)
from ftp.distributed.config import DistributedSection, problems_with
from ftp.errors import ConfigError, Problem, UserError
from ftp.plugins import PluginSet
from ftp.registry import Entry

C = TypeVar("C", bound=Component)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class _Open(BaseModel):
    """A section whose other keys belong to the component it names."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())


class PipelineSection(_Shape):
    """``[pipeline]``: the run's name, seed and where it writes.

    ``plugins`` lists local plugin modules to load; their settings, like any plugin's, go in
    the top-level ``[plugins.NAME]`` tables instead.
    """

    name: str = Field(pattern=NAME_PATTERN)
    seed: int = 42
    output_dir: str | None = None
    plugins: list[str] = Field(default_factory=list)
    description: str = ""
    # Checkpoints inside every stage (a stage may set its own); see ftp.checkpoints.
    checkpoint_every: int | str = DEFAULT_EVERY
    keep_checkpoints: int = Field(DEFAULT_KEEP, ge=1)
    skip_nonfinite_steps: int = Field(0, ge=0)

    @field_validator("checkpoint_every")
    @classmethod
    def _every(cls, v: Any) -> Any:
        parse_every(v)
        return v


class ModelSection(_Open):
    """``[model]``: ``provider`` plus that provider's options."""

    provider: str = "hf"
    #: Models ``ftp models compare`` compares when no --candidate is given (catalog names,
    #: folders, Hub ids, .gguf files or config.json files); ``ftp run`` ignores them.
    candidates: list[str] = Field(default_factory=list)


class DataSection(_Open):
    """``[data.NAME]``: a loader with its options, a format, and how to split."""

    loader: str
    format: str
    format_options: dict[str, Any] = Field(default_factory=dict)
    placeholders: dict[str, str] = Field(default_factory=dict)
    eval_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    eval_path: str | None = None
    limit: int | None = Field(None, gt=0)
    shuffle: bool = True
    on_bad_rows: Literal["error", "skip"] = "error"


class AdapterSection(_Shape):
    """A stage's ``adapter = {...}``: LoRA through peft."""

    type: Literal["lora"] = "lora"
    r: int = Field(16, gt=0)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: str | list[str] = "all-linear"
    modules_to_save: list[str] = Field(default_factory=list)
    use_dora: bool = False  # DoRA: weight-decomposed LoRA (magnitude and direction)


class StageSection(_Open):
    """``[[stages]]``: a method, the data it trains on, an adapter; the rest are method options."""

    method: str
    # One dataset; a list, concatenated; or a table of positive weights, mixed.
    data: str | list[str] | dict[str, float]
    name: str | None = Field(None, pattern=NAME_PATTERN)
    adapter: AdapterSection | None = None
    # None: the [pipeline] setting.
    checkpoint_every: int | str | None = None
    keep_checkpoints: int | None = Field(None, ge=1)
    skip_nonfinite_steps: int | None = Field(None, ge=0)

    @field_validator("checkpoint_every")
    @classmethod
    def _every(cls, v: Any) -> Any:
        if v is not None:
            parse_every(v)
        return v

    def policy(self, pipeline: PipelineSection) -> Policy:
        """The stage's checkpoint policy: its own settings, else the pipeline's."""
        every = self.checkpoint_every if self.checkpoint_every is not None \
            else pipeline.checkpoint_every
        steps, seconds = parse_every(every)
        keep = self.keep_checkpoints or pipeline.keep_checkpoints
        skip = self.skip_nonfinite_steps if self.skip_nonfinite_steps is not None \
            else pipeline.skip_nonfinite_steps
        return Policy(steps, seconds, keep, skip)

    @field_validator("data")
    @classmethod
    def _data_shape(cls, v: Any) -> Any:
        if isinstance(v, list | dict) and not v:
            raise ValueError("name at least one dataset")
        if isinstance(v, list) and len(set(v)) != len(v):
            raise ValueError("a dataset is listed twice")
        if isinstance(v, dict):
            bad = [k for k, w in v.items() if not w > 0]
            if bad:
                raise ValueError(f"weights must be positive; {bad[0]!r} has {v[bad[0]]}")
        return v

    def datasets(self) -> list[str]:
        """The names of the datasets the stage trains on, in the order given."""
        return [self.data] if isinstance(self.data, str) else list(self.data)


class EvaluateSection(_Open):
    """``[[evaluate]]``: an evaluator, when it runs, on what data; the rest are its options."""

    evaluator: str
    name: str | None = Field(None, pattern=NAME_PATTERN)
    data: str | None = None
    split: Literal["eval", "train", "all"] = "eval"
    before: bool = False
    after: Literal["all", "last", "none"] | list[str] = "last"
    require: list[str] = Field(default_factory=list)

    @field_validator("after")
    @classmethod
    def _no_empty_list(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("give stage names, or 'all', 'last' or 'none'")
        return v


class PipelineFile(_Shape):
    """The whole file, pass 1."""

    pipeline: PipelineSection
    model: ModelSection = Field(default_factory=ModelSection)
    data: dict[str, DataSection] = Field(default_factory=dict)
    stages: list[StageSection] = Field(min_length=1)
    evaluate: list[EvaluateSection] = Field(default_factory=list)
    # Plugin name → its settings table; checked in pass 2, against what the plugin declares.
    plugins: dict[str, dict[str, Any]] = Field(default_factory=dict)
    distributed: DistributedSection | None = None


# --- Resolved pipeline -----------------------------------------------------------------------


@dataclass
class Bound(Generic[C]):
    """A component chosen by name, with its validated options; ``C`` is its kind's base."""

    entry: Entry
    config: StrictConfig

    @property
    def cls(self) -> type[C]:
        """The component's class (the registry checked that it subclasses its kind's base)."""
        return cast("type[C]", self.entry.cls)

    def build(self) -> C:
        """Instantiate the component with its options."""
        return self.cls(self.config)


@dataclass
class Dataset:
    """A resolved ``[data.NAME]``."""

    name: str
    section: DataSection
    loader: Bound[DataLoader]
    format: Bound[Format]


@dataclass
class Stage:
    """A resolved ``[[stages]]`` entry.

    Attributes:
        data: The one dataset's name, or for several a label (``a+b``, ``a*0.7+b*0.3``) under
            which the runner keeps their combination.
        datasets: The datasets' names, in the order given.
        weights: Set when the datasets are mixed by weight rather than concatenated.

    """

    index: int
    name: str
    data: str
    method: Bound[Method]
    adapter: AdapterSection | None
    datasets: list[str] = field(default_factory=list)
    weights: dict[str, float] | None = None
    policy: Policy = field(default_factory=lambda: Policy(None, parse_every(DEFAULT_EVERY)[1],
                                                          DEFAULT_KEEP))

    def __post_init__(self) -> None:
        if not self.datasets:
            self.datasets = [self.data]


@dataclass
class Evaluation:
    """A resolved ``[[evaluate]]`` entry."""

    index: int
    name: str
    section: EvaluateSection
    evaluator: Bound[Evaluator]
    after_stages: list[str]


@dataclass
class Pipeline:
    """A validated pipeline, ready for the runner."""

    source: Path
    raw: dict[str, Any]
    file: PipelineFile
    model: Bound[ModelProvider]
    datasets: dict[str, Dataset]
    stages: list[Stage]
    evaluations: list[Evaluation]
    plugins: PluginSet = field(repr=False)
    #: Plugin name → its validated settings (``[plugins.NAME]``, else the defaults), for every
    #: loaded plugin that declares settings.
    plugin_settings: dict[str, StrictConfig] = field(default_factory=dict)
    #: The ``[distributed]`` launcher with its options (None without the table).
    launcher: Bound | None = None

    @property
    def distributed(self) -> DistributedSection | None:
        """The ``[distributed]`` table, or None (one process)."""
        return self.file.distributed

    @property
    def name(self) -> str:
        """The pipeline's name."""
        return self.file.pipeline.name

    @property
    def seed(self) -> int:
        """The pipeline's seed."""
        return self.file.pipeline.seed

    @property
    def base_dir(self) -> Path:
        """The pipeline file's folder."""
        return self.source.parent


# --- Reading ---------------------------------------------------------------------------------


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file; a missing or malformed file is a `UserError` naming where."""
    if not path.is_file():
        raise UserError(f"pipeline file not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file") from None


_KEY_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _parse_key(key: str) -> list[str | int]:
    parts: list[str | int] = []
    pos = 0
    for m in _KEY_PART.finditer(key):
        if m.start() != pos and key[pos] != ".":
            raise UserError(f"--set: cannot parse key {key!r}")
        parts.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if not parts:
        raise UserError(f"--set: empty key in {key!r}")
    return parts


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word is a string: --set model.path=./my-model


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set KEY=VALUE`` overrides (``stages[0].epochs=1``; values parsed as TOML)."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        parts = _parse_key(key.strip())
        node: Any = raw
        for i, part in enumerate(parts[:-1]):
            nxt = parts[i + 1]
            if isinstance(part, int):
                if not isinstance(node, list) or part >= len(node):
                    raise UserError(f"--set {key}: no such entry [{part}]")
                node = node[part]
            else:
                if not isinstance(node, dict):
                    raise UserError(f"--set {key}: {part!r} is not inside a table")
                node = node.setdefault(part, [] if isinstance(nxt, int) else {})
        last = parts[-1]
        if isinstance(last, int):
            if not isinstance(node, list) or last >= len(node):
                raise UserError(f"--set {key}: no such entry [{last}]")
            node[last] = _parse_value(value.strip())
        else:
            if not isinstance(node, dict):
                raise UserError(f"--set {key}: {last!r} is not inside a table")
            node[last] = _parse_value(value.strip())
    return raw


# --- Validation ------------------------------------------------------------------------------


def _loc_path(prefix: str, loc: tuple[Any, ...]) -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _problems_from(
    exc: ValidationError, prefix: str, model: type[BaseModel], also: tuple[str, ...] = ()
) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        kind = err["type"]
        if kind == "extra_forbidden":
            msg = "unknown key"
            allowed = _allowed_keys(model, loc)
            if len(loc) == 1:
                allowed += [k for k in also if k not in allowed]
            if allowed:
                from ftp.suggest import did_you_mean

                msg += did_you_mean(str(loc[-1]), allowed)
        elif kind == "missing":
            msg = "required key is missing"
        else:
            msg = err["msg"]
        has_value = kind not in ("missing", "extra_forbidden")
        value = err.get("input") if has_value else None
        problems.append(Problem(_loc_path(prefix, loc), msg, value, has_value))
    return problems


def _allowed_keys(model: Any, loc: tuple[Any, ...]) -> list[str]:
    # Walk the model tree along loc[:-1] to find the fields next to the unknown key.
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return []
        ann = fields[part].annotation
        model = _first_model(ann)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _first_model(ann: Any) -> Any:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def _validate(
    model: type[BaseModel], data: Any, prefix: str, also: tuple[str, ...] = ()
) -> tuple[Any, list[Problem]]:
    """Validate ``data``; ``also`` are keys of the enclosing section, for 'did you mean'."""
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, _problems_from(exc, prefix, model, also)


def _salvage(model: type[BaseModel], data: Any, prefix: str, found: list[Problem]) -> Any:
    """What is usable of an open section that failed pass 1, so pass 2 still checks the rest.

    Keys with a problem fall back to their defaults; without a valid value for every required
    key (the component's name, say) there is nothing to check against, and it returns None.
    The result only feeds more checks: a file with problems never reaches the runner.
    """
    if not isinstance(data, dict):
        return None
    bad = {re.split(r"[.\[]", p.path[len(prefix) + 1:], maxsplit=1)[0] for p in found}
    try:
        section = model.model_validate({k: v for k, v in data.items() if k not in bad})
    except ValidationError:
        return None
    if "name" in bad and isinstance(data.get("name"), str):
        # The name the user wrote, for cross-references; only tables with a name get here.
        section.name = data["name"]  # type: ignore[attr-defined]
    return section


def _bind(
    plugins: PluginSet,
    kind: str,
    name: str,
    options: dict[str, Any],
    name_path: str,
    prefix: str,
    problems: list[Problem],
    also: tuple[str, ...] = (),
    base_dir: Path | None = None,
) -> Bound | None:
    """The component ``name`` of ``kind`` with its options, or None after adding problems.

    With ``base_dir``, the local files the options name are checked too (`_check_files`),
    even when other options are wrong: every problem at once.
    """
    entry = plugins.registry.find(kind, name)
    if entry is None:
        msg = plugins.registry.unknown(kind, name) + plugins.broken_note()
        problems.append(Problem(name_path, msg))
        # An unknown name must not hide the section's other mistakes: the options every
        # component of this kind shares (a method's learning_rate) are still checked.
        problems.extend(_shared_problems(plugins, kind, options, prefix))
        return None
    ambiguous = plugins.registry.ambiguous(kind, name)
    if ambiguous is not None:
        # Using either provider silently would be a guess; the user picks by blocking one.
        problems.append(Problem(name_path, ambiguous))
    cfg, found = _validate(entry.cls.Config, options, prefix, also)
    problems.extend(found)
    if base_dir is not None:
        usable = cfg if cfg is not None else _without_bad_keys(entry.cls.Config, options,
                                                               found, prefix)
        if usable is not None:
            _check_files(Bound(entry, usable), base_dir, prefix, problems)
    if cfg is None:
        return None
    _bind_refs(plugins, cfg, prefix, problems, base_dir)
    return Bound(entry, cfg)


def _bind_refs(plugins: PluginSet, cfg: BaseModel, prefix: str,
               problems: list[Problem], base_dir: Path | None = None) -> None:
    """Bind the components an option names (`ComponentRef`s, e.g. GRPO's rewards).

    Each is checked like a section: its name against the registry, its options against the
    named component's ``Config``, with problems at their own TOML paths.
    """
    from ftp.kinds import BY_NAME

    for field_name in type(cfg).model_fields:
        value = getattr(cfg, field_name)
        refs = value if isinstance(value, list) else [value]
        for j, ref in enumerate(refs):
            if not isinstance(ref, ComponentRef):
                continue
            where = f"{prefix}.{field_name}" + (f"[{j}]" if isinstance(value, list) else "")
            kind = BY_NAME[ref.kind]
            name = getattr(ref, kind.key)
            bound = _bind(plugins, kind.name, name, ref.options(), f"{where}.{kind.key}",
                          where, problems, also=tuple(type(ref).model_fields),
                          base_dir=base_dir)
            if bound is not None:
                ref.bind(bound.entry, bound.config)


def _without_bad_keys(config: type[StrictConfig], options: dict[str, Any],
                      found: list[Problem], prefix: str) -> StrictConfig | None:
    """The options with the keys that have problems left out, if that validates; else None."""
    bad = {re.split(r"[.\[]", p.path[len(prefix) + 1:], maxsplit=1)[0] for p in found}
    try:
        return config.model_validate({k: v for k, v in options.items() if k not in bad})
    except ValidationError:
        return None


def _shared_problems(plugins: PluginSet, kind: str, options: dict[str, Any],
                     prefix: str) -> list[Problem]:
    """Problems in the options that every registered component of ``kind`` declares alike.

    Used when the component's name is unknown: which component was meant is a guess, but an
    option that all of them define the same way (name, type and constraints) can be checked
    anyway. A missing required key is not reported, since the meant component may not need it.
    """
    configs = [e.cls.Config for e in plugins.registry.entries[kind].values()]
    if not configs or not options:
        return []

    def signature(info: Any) -> tuple[Any, str]:
        return info.annotation, repr(info.metadata)

    first = configs[0].model_fields
    shared = {key: info for key, info in first.items()
              if key in options and all(key in c.model_fields and signature(c.model_fields[key])
                                        == signature(info) for c in configs[1:])}
    if not shared:
        return []
    model = create_model(  # type: ignore[call-overload]
        f"Shared_{kind}", __config__=ConfigDict(extra="ignore", protected_namespaces=()),
        **{key: (info.annotation, info) for key, info in shared.items()},
    )
    _, found = _validate(model, {k: options[k] for k in shared}, prefix)
    return [p for p in found if p.message != "required key is missing"]


def _extras(section: BaseModel) -> dict[str, Any]:
    return dict(section.model_extra or {})


def _pass1(raw: dict[str, Any], problems: list[Problem]) -> PipelineFile:
    """Check the file's shape section by section; return the sections that passed.

    Sections are checked one at a time, so a bad stage does not hide problems in another,
    and every problem keeps its real TOML path.
    """
    for key in raw:
        if key not in PipelineFile.model_fields:
            from ftp.suggest import did_you_mean

            hint = did_you_mean(key, PipelineFile.model_fields)
            problems.append(Problem(key, "unknown section" + hint))
    raw_pipeline = raw.get("pipeline")
    if isinstance(raw_pipeline, dict) and isinstance(raw_pipeline.get("plugins"), dict):
        # [pipeline.plugins.NAME]: settings written where the list of modules to load goes.
        problems.append(Problem("pipeline.plugins", "is the list of local plugin modules to "
                                "load; plugin settings go in a top-level [plugins.NAME] table"))
        raw_pipeline = {k: v for k, v in raw_pipeline.items() if k != "plugins"}
    pipeline, found = _validate(PipelineSection, raw_pipeline, "pipeline")
    if "pipeline" not in raw:
        found = [Problem("pipeline", "required section is missing: add [pipeline] with a name")]
    problems.extend(found)
    model, found = _validate(ModelSection, raw.get("model", {}), "model")
    problems.extend(found)

    data: dict[str, DataSection] = {}
    raw_data = raw.get("data", {})
    if not isinstance(raw_data, dict):
        problems.append(Problem("data", "expected tables [data.NAME]", raw_data, True))
        raw_data = {}
    for name, section in raw_data.items():
        where = f"data.{name}"
        if not re.match(NAME_PATTERN, name):
            problems.append(Problem(where, "dataset names use letters, digits, _ . -"))
        parsed, found = _validate(DataSection, section, where)
        problems.extend(found)
        if parsed is None:
            parsed = _salvage(DataSection, section, where, found)
        if parsed is not None:
            data[name] = parsed

    stages: list[StageSection] = []
    raw_stages = raw.get("stages")
    if raw_stages is None:
        problems.append(Problem("stages", "required: add at least one [[stages]] table"))
        raw_stages = []
    elif not isinstance(raw_stages, list):
        problems.append(Problem("stages", "expected [[stages]] tables", raw_stages, True))
        raw_stages = []
    elif not raw_stages:
        problems.append(Problem("stages", "required: add at least one [[stages]] table"))
    for i, section in enumerate(raw_stages):
        parsed, found = _validate(StageSection, section, f"stages[{i}]")
        problems.extend(found)
        stages.append(parsed or _salvage(StageSection, section, f"stages[{i}]", found))

    evaluate: list[EvaluateSection] = []
    raw_eval = raw.get("evaluate", [])
    if not isinstance(raw_eval, list):
        problems.append(Problem("evaluate", "expected [[evaluate]] tables", raw_eval, True))
        raw_eval = []
    for i, section in enumerate(raw_eval):
        parsed, found = _validate(EvaluateSection, section, f"evaluate[{i}]")
        problems.extend(found)
        evaluate.append(parsed or _salvage(EvaluateSection, section, f"evaluate[{i}]", found))

    settings = _plugin_tables(raw.get("plugins", {}), problems)
    distributed = None
    if "distributed" in raw:
        distributed, found = _validate(DistributedSection, raw["distributed"], "distributed")
        problems.extend(found)
        if distributed is None:
            distributed = _salvage(DistributedSection, raw["distributed"], "distributed", found)

    if pipeline is None:
        # Keep checking the other sections against their components; the problems found in
        # [pipeline] are already recorded. Its plugins are still loaded if they can be read.
        listed = raw.get("pipeline", {}).get("plugins") if isinstance(raw.get("pipeline"), dict) \
            else None
        ok = isinstance(listed, list) and all(isinstance(x, str) for x in listed)
        pipeline = PipelineSection.model_construct(name="?", plugins=listed if ok else [])
    return PipelineFile.model_construct(
        pipeline=pipeline, model=model, data=data, stages=stages, evaluate=evaluate,
        plugins=settings, distributed=distributed,
    )


def _plugin_tables(raw_plugins: Any, problems: list[Problem]) -> dict[str, dict[str, Any]]:
    """The ``[plugins.NAME]`` tables that are tables; their keys are checked in pass 2."""
    if not isinstance(raw_plugins, dict):
        problems.append(Problem("plugins", "expected tables [plugins.NAME] of plugin settings "
                                "(local plugin modules to load are listed in [pipeline] "
                                "plugins)", raw_plugins, True))
        return {}
    tables = {}
    for name, table in raw_plugins.items():
        if isinstance(table, dict):
            tables[name] = table
        else:
            problems.append(Problem(f"plugins.{name}", f"expected a table [plugins.{name}] of "
                                    "the plugin's settings", table, True))
    return tables


def _settings_of(plugins: PluginSet, tables: dict[str, dict[str, Any]],
                 problems: list[Problem]) -> dict[str, StrictConfig]:
    """Validate each ``[plugins.NAME]`` table against the settings its plugin declares.

    A plugin that declares settings but has no table gets its defaults.
    """
    from ftp.suggest import did_you_mean

    declared = sorted(plugins.settings)
    for name in tables:
        if name in plugins.settings:
            continue
        where = f"plugins.{name}"
        info = plugins.infos.get(name)
        if info is not None and info.status == "blocked":
            msg = f"plugin {name!r} is {info.error}, so its settings cannot be used; remove " \
                  "the table or unblock the plugin"
        elif info is not None and info.status == "error":
            msg = f"plugin {name!r} failed ({info.error}): fix or reinstall it, then check " \
                  "`ftp plugins`"
        elif info is not None:
            msg = f"plugin {name!r} declares no settings; remove the table"
        else:
            listed = ", ".join(declared) if declared else "none loaded"
            msg = (f"no plugin named {name!r}{did_you_mean(name, declared)}; plugins that take "
                   f"settings: {listed}")
        problems.append(Problem(where, msg))
    settings: dict[str, StrictConfig] = {}
    for name in declared:
        cfg, found = _validate(plugins.settings[name], tables.get(name, {}), f"plugins.{name}")
        problems.extend(found)
        if cfg is not None:
            settings[name] = cfg
    return settings


def load_pipeline(
    path: Path,
    plugins: PluginSet,
    overrides: list[str] | None = None,
    allow_code: bool | None = None,
    rehearsal: bool = False,
) -> Pipeline:
    """Read, validate and resolve a pipeline file.

    Args:
        path: The ``pipeline.toml``.
        plugins: The loaded plugins; ``[pipeline] plugins`` are loaded into it here.
        overrides: ``--set KEY=VALUE`` items applied before validation.
        allow_code: The user allowed code the file names (``--allow-code``); without it,
            ``FTP_ALLOW_CODE`` decides (see `ftp.consent`).
        rehearsal: For ``ftp run --rehearse``: ``[distributed]`` is checked as for the GPU
            machine it is bound for (the rehearsal trains DDP on CPU instead).

    Raises:
        ConfigError: with every problem found.
        UserError: when the file cannot be read at all, or names code the user did not allow.

    """
    from ftp.consent import require_consent

    path = Path(path)
    raw = apply_overrides(read_toml(path), overrides or [])
    # Before anything is imported: a downloaded file must not run code without consent.
    require_consent(raw, str(path), allow_code)
    problems: list[Problem] = []
    file = _pass1(raw, problems)

    for spec in file.pipeline.plugins:
        try:
            plugins.load_module(spec, base_dir=path.parent)
        except UserError as exc:
            problems.append(Problem("pipeline.plugins", str(exc)))
    # After [pipeline] plugins: a local plugin module may declare settings too.
    plugin_settings = _settings_of(plugins, file.plugins, problems)

    base_dir = path.parent  # relative data paths are relative to the pipeline file
    model = None
    if file.model is not None:
        model = _bind(plugins, "model_provider", file.model.provider, _extras(file.model),
                      "model.provider", "model", problems, also=tuple(ModelSection.model_fields),
                      base_dir=base_dir)

    datasets: dict[str, Dataset] = {}
    for name, section in file.data.items():
        where = f"data.{name}"
        loader = _bind(plugins, "data_loader", section.loader, _extras(section),
                       f"{where}.loader", where, problems, also=tuple(DataSection.model_fields),
                       base_dir=base_dir)
        fmt = _bind(plugins, "format", section.format, section.format_options,
                    f"{where}.format", f"{where}.format_options", problems)
        if section.eval_path is not None:
            if section.eval_fraction > 0:
                problems.append(Problem(f"{where}.eval_path", "set eval_path or eval_fraction, "
                                        "not both: the held-out rows come from one or the other"))
            if loader and "path" not in type(loader.config).model_fields:
                problems.append(Problem(f"{where}.eval_path", f"loader {section.loader!r} has no "
                                        "`path` option, so eval_path cannot be read with it"))
            elif loader:
                # The held-out file is read by the same loader, with eval_path as its path.
                held_out: Bound[DataLoader] = Bound(loader.entry, loader.config.model_copy(
                    update={"path": section.eval_path}))
                _check_files(held_out, base_dir, where, problems, {"path": "eval_path"})
        if loader and fmt:
            datasets[name] = Dataset(name, section, loader, fmt)

    raw_data: dict[str, Any] = raw["data"] if isinstance(raw.get("data"), dict) else {}
    stages: list[Stage] = []
    seen_names: dict[str, int] = {}
    stage_names: list[str] = []
    for i, section in enumerate(file.stages):
        if section is None:
            continue
        where = f"stages[{i}]"
        name = section.name or section.method
        stage_names.append(name)
        if name in seen_names:
            hint = "" if section.name else " (give each stage a distinct `name`)"
            problems.append(Problem(f"{where}.name", f"stage name {name!r} is already used by "
                                    f"stages[{seen_names[name]}]{hint}"))
        seen_names.setdefault(name, i)
        if name == "base":
            problems.append(Problem(f"{where}.name", "'base' is reserved for the model before "
                                    "training; choose another stage name"))
        method = _bind(plugins, "method", section.method, _extras(section),
                       f"{where}.method", where, problems, also=tuple(StageSection.model_fields),
                       base_dir=base_dir)
        names = section.datasets()
        _check_stage_data(section, method, names, raw_data, datasets, where, problems)
        if method:
            if stages:
                _check_chain(stages[-1], method, section.method, where, problems)
            weights = dict(section.data) if isinstance(section.data, dict) else None
            stages.append(Stage(i, name, data_label(section.data), method, section.adapter,
                                names, weights, section.policy(file.pipeline)))

    evaluations: list[Evaluation] = []
    seen_evals: dict[str, int] = {}
    for i, section in enumerate(file.evaluate):
        if section is None:
            continue
        where = f"evaluate[{i}]"
        name = section.name or section.evaluator
        if name in seen_evals:
            problems.append(Problem(f"{where}.name", f"evaluation name {name!r} is already used "
                                    f"by evaluate[{seen_evals[name]}]; give each a distinct "
                                    "`name`"))
        seen_evals.setdefault(name, i)
        ev = _bind(plugins, "evaluator", section.evaluator, _extras(section),
                   f"{where}.evaluator", where, problems,
                   also=tuple(EvaluateSection.model_fields), base_dir=base_dir)
        after = _after_stages(section, stage_names, where, problems)
        if ev is not None:
            _check_eval_data(section, ev, raw_data, datasets, where, problems)
            _check_eval_tasks(section, ev, stages, after, where, problems)
            _check_requirements(section, ev, where, problems, base_dir)
            evaluations.append(Evaluation(i, name, section, ev, after))
        if not section.before and not after:
            problems.append(Problem(where, "runs neither before nor after any stage; "
                                    "set before = true or after"))

    if model is not None and getattr(model.config, "quantize", None):
        for stage in stages:
            if stage.adapter is None:
                problems.append(Problem(f"stages[{stage.index}].adapter", "a 4-bit model "
                                        "([model] quantize) trains through an adapter only "
                                        "(QLoRA): add adapter = { type = \"lora\" }"))
    launcher = None
    if file.distributed is not None:
        launcher = _bind(plugins, "launcher", file.distributed.launcher,
                         _extras(file.distributed), "distributed.launcher", "distributed",
                         problems, also=tuple(DistributedSection.model_fields))
        problems.extend(problems_with(file.distributed, stages, base_dir, for_gpus=rehearsal))

    if problems or model is None:
        raise ConfigError(problems, str(path))
    return Pipeline(path, raw, file, model, datasets, stages, evaluations, plugins,
                    plugin_settings, launcher)


def _check_files(bound: Bound | None, base_dir: Path, prefix: str, problems: list[Problem],
                 rename: dict[str, str] | None = None) -> None:
    """Add the problems a component finds with the local files its options name.

    ``rename`` maps an option to the pipeline key that set it (``path`` → ``eval_path``).
    """
    if bound is None:
        return
    try:
        found = bound.build().check_files(base_dir)
    except Exception as exc:  # noqa: BLE001 — a plugin's faulty check is reported, not fatal
        e = bound.entry
        found = [("", f"{e.kind.replace('_', ' ')} {e.name!r} (plugin {e.plugin!r}) failed "
                  f"to check its files: {type(exc).__name__}: {exc}")]
    for key, message in found:
        key = (rename or {}).get(key, key)
        problems.append(Problem(f"{prefix}.{key}" if key else prefix, message))


def data_label(data: str | list[str] | dict[str, float]) -> str:
    """A stage's data as one name: ``a``, ``a+b`` (concatenated), ``a*0.7+b*0.3`` (mixed).

    ``+`` and ``*`` cannot occur in dataset names, so a label never names a single dataset.
    """
    if isinstance(data, str):
        return data
    if isinstance(data, list):
        return "+".join(data)
    return "+".join(f"{name}*{weight:g}" for name, weight in data.items())


def _check_stage_data(section: StageSection, method: Bound | None, names: list[str],
                      raw_data: dict[str, Any], datasets: dict[str, Dataset], where: str,
                      problems: list[Problem]) -> None:
    """Every dataset exists, produces a shape the method trains on, and all the same shape."""
    many = len(names) > 1 or not isinstance(section.data, str)
    shapes: dict[str, str] = {}
    for name in names:
        path = f"{where}.data.{name}" if isinstance(section.data, dict) else (
            f"{where}.data[{names.index(name)}]" if many else f"{where}.data")
        if name not in raw_data:
            problems.append(Problem(path, _undefined_data(name, raw_data), name, True))
            continue
        if name not in datasets:
            continue
        produced = datasets[name].format.cls.produces
        shapes[name] = produced
        if method and produced not in method.cls.accepts:
            problems.append(Problem(
                path,
                f"method {section.method!r} trains on {_list(method.cls.accepts)} data, "
                f"but dataset {name!r} (format {datasets[name].section.format!r}) "
                f"produces {produced}",
            ))
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{n!r} {s}" for n, s in shapes.items())
        problems.append(Problem(f"{where}.data", "datasets trained on together must produce "
                                f"the same shape; got {listed}"))


def _check_chain(previous: Stage, method: Bound, method_name: str, where: str,
                 problems: list[Problem]) -> None:
    """A stage must be able to start from the model the previous stage leaves."""
    leaves = previous.method.cls.task
    cls = method.cls
    if leaves not in cls.starts_from():
        problems.append(Problem(
            f"{where}.method",
            f"method {method_name!r} needs a {' or '.join(sorted(cls.starts_from()))} model, "
            f"but the previous stage {previous.name!r} ({previous.method.entry.name}) leaves a "
            f"{leaves} model; reorder the stages or split the pipeline",
        ))


def _check_eval_tasks(section: EvaluateSection, ev: Bound, stages: list[Stage],
                      after: list[str], where: str, problems: list[Problem]) -> None:
    """An evaluator must be able to judge the model it is given (text vs classifier)."""
    tasks = ev.cls.tasks
    by_name = {s.name: s for s in stages}
    judged = [(s, by_name[s]) for s in after if s in by_name]
    if section.before and stages:
        judged.insert(0, ("base", stages[0]))
    for label, stage in judged:
        task = stage.method.cls.task
        if task not in tasks:
            when = "before training" if label == "base" else f"after stage {label!r}"
            problems.append(Problem(
                where,
                f"evaluator {section.evaluator!r} judges {' or '.join(sorted(tasks))} models, "
                f"but {when} the model is a {task} model",
            ))


def _check_requirements(section: EvaluateSection, ev: Bound, where: str,
                        problems: list[Problem], base_dir: Path | None = None) -> None:
    """``require``: each readable, base-relative ones with ``before``, metrics the evaluator has."""
    from fnmatch import fnmatchcase

    from ftp.gates import BASE, parse
    from ftp.suggest import did_you_mean

    reported: tuple[str, ...] = ()
    if section.require:
        try:
            evaluator = ev.build()
        except Exception:  # noqa: BLE001 — its options' problems are reported on their own
            evaluator = None
        if evaluator is not None:
            try:
                reported = _reported_metrics(evaluator, base_dir)
            except Exception as exc:  # noqa: BLE001 — the plugin's fault, said as such
                problems.append(Problem(
                    f"{where}.require", f"evaluator {ev.entry.name!r} (plugin "
                    f"{ev.entry.plugin!r}) failed to list its metrics: "
                    f"{type(exc).__name__}: {exc}"))
    for j, text in enumerate(section.require):
        at = f"{where}.require[{j}]"
        try:
            req = parse(text)
        except ValueError as exc:
            problems.append(Problem(at, str(exc)))
            continue
        if req.relative and not section.before:
            problems.append(Problem(at, f"{text!r} compares with {BASE}, the model before "
                                    "training: set before = true in this [[evaluate]]"))
        if reported and not any(fnmatchcase(req.metric, name) for name in reported):
            problems.append(Problem(at, f"evaluator {ev.entry.name!r} reports no metric "
                                    f"{req.metric!r}{did_you_mean(req.metric, reported)}; it "
                                    f"reports: {', '.join(reported)}"))


def _reported_metrics(evaluator: Any, base_dir: Path | None) -> tuple[str, ...]:
    """What ``evaluator.reported_metrics`` declares, given ``base_dir`` where it takes one.

    An override written before ``base_dir`` was passed takes no argument; the signature says
    which kind it is, so an error raised inside an override is never mistaken for that.
    """
    import inspect

    declare = evaluator.reported_metrics
    params = inspect.signature(declare).parameters.values()
    if any(p.name == "base_dir" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return tuple(declare(base_dir=base_dir))
    return tuple(declare())


def _after_stages(
    section: EvaluateSection, stage_names: list[str], where: str, problems: list[Problem]
) -> list[str]:
    if section.after == "all":
        return list(stage_names)
    if section.after == "last":
        return stage_names[-1:]
    if section.after == "none":
        return []
    from ftp.suggest import did_you_mean

    for j, s in enumerate(section.after):
        if s not in stage_names:
            problems.append(Problem(f"{where}.after[{j}]", f"no stage named {s!r}"
                                    f"{did_you_mean(s, stage_names)}; stages: "
                                    f"{', '.join(dict.fromkeys(stage_names))}"))
    return list(section.after)


def _check_eval_data(
    section: EvaluateSection,
    ev: Bound,
    raw_data: dict[str, Any],
    datasets: dict[str, Dataset],
    where: str,
    problems: list[Problem],
) -> None:
    cls = ev.cls
    if section.data is None:
        if cls.needs_data:
            problems.append(Problem(f"{where}.data", f"evaluator {section.evaluator!r} needs a "
                                    "dataset: set `data` to one of the [data.*] names"))
        return
    if section.data not in raw_data:
        problems.append(Problem(f"{where}.data", _undefined_data(section.data, raw_data),
                                section.data, True))
        return
    ds = datasets.get(section.data)
    if ds is None:
        return
    produced = ds.format.cls.produces
    if cls.accepts and produced not in cls.accepts:
        problems.append(Problem(
            f"{where}.data",
            f"evaluator {section.evaluator!r} reads {_list(cls.accepts)} data, but dataset "
            f"{section.data!r} produces {produced}",
        ))
    if section.split == "eval" and ds.section.eval_fraction == 0 and ds.section.eval_path is None:
        problems.append(Problem(
            f"{where}.split",
            f"dataset {section.data!r} has no held-out split (eval_fraction = 0); set "
            'eval_fraction or eval_path there, or split = "all" here',
        ))


def _list(shapes: frozenset[str]) -> str:
    return " or ".join(sorted(shapes)) or "no"


def _undefined_data(name: str, raw_data: dict[str, Any]) -> str:
    from ftp.suggest import did_you_mean

    names = list(raw_data)
    listed = ", ".join(names) if names else "none defined"
    return f"no dataset named {name!r}{did_you_mean(name, names)}; datasets: {listed}"
