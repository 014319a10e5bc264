"""The ``ftp`` command line.

Exit codes: 0 success, 2 a user error (bad file, config or arguments), 1 a failure while
running. ``--help``, ``validate``, ``plugins``, ``components`` and ``schema`` import neither
torch, transformers, trl nor datasets.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from ftp.errors import FtpError, UserError
from ftp.plugins import ONLY_ENV, PluginSet, in_process_key, load_plugins
from ftp.registry import KIND_LABELS

KIND_ALIASES = {
    "loader": "data_loader", "loaders": "data_loader", "data_loader": "data_loader",
    "data-loader": "data_loader", "format": "format", "formats": "format",
    "provider": "model_provider", "providers": "model_provider",
    "model_provider": "model_provider", "model-provider": "model_provider",
    "method": "method", "methods": "method", "evaluator": "evaluator", "evaluators": "evaluator",
}


class _State:
    def __init__(self, plugin_opts: tuple[str, ...], strict: bool,
                 only: str | None = None) -> None:
        self.plugin_opts = plugin_opts
        self.strict = strict
        self.only = only
        self._plugins: PluginSet | None = None

    def plugins(self) -> PluginSet:
        if self._plugins is None:
            self._plugins = load_plugins(self.plugin_opts, strict=self.strict, only=self.only)
        return self._plugins


class _Group(click.Group):
    """Adds commands that plugins provide through ``ftp_cli_commands``."""

    def _extra(self, ctx: click.Context) -> dict[str, click.Command]:
        # The group's own -p options count here too: `ftp -p myplugin.py mycommand`.
        opts = tuple(ctx.params.get("plugin_opts") or ())
        only = ctx.params.get("only_plugins")
        # In-process plugins (ftp.testing) and the allow-list change which commands exist.
        key = (opts, only, os.environ.get(ONLY_ENV), in_process_key())
        cache: dict[Any, dict[str, click.Command]] = self.__dict__.setdefault(
            "_extra_cache", {}
        )
        if key not in cache:
            extra: dict[str, click.Command] = {}
            try:
                plugins = load_plugins(opts, only=only)
                for commands in plugins.call("ftp_cli_commands"):
                    for cmd in commands:
                        if cmd.name and cmd.name not in self.commands:
                            extra[cmd.name] = cmd
            except FtpError as exc:
                click.echo(f"warning: {exc}", err=True)  # the built-in commands still work
            cache[key] = extra
        return cache[key]

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._extra(ctx)))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return super().get_command(ctx, name) or self._extra(ctx).get(name)


def _fail(exc: FtpError, debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exception(exc)
    click.echo(f"error: {exc}", err=True)
    if not debug and isinstance(exc, FtpError) and exc.exit_code == 1:
        click.echo("(rerun with --debug for the traceback)", err=True)
    sys.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-p", "plugin_opts", multiple=True, metavar="NAME",
              help="Load a plugin module or .py file; -p no:NAME blocks an installed plugin.")
@click.option("--strict-plugins", is_flag=True,
              help="Fail when any plugin fails to load or a plugin's lifecycle hook raises.")
@click.option("--only-plugins", "only_plugins", default=None, metavar="NAME,...",
              help=f"Load only these installed third-party plugins (also {ONLY_ENV}); "
              "ftp's built-ins always load.")
@click.version_option(package_name="ftp", prog_name="ftp")
@click.pass_context
def cli(ctx: click.Context, plugin_opts: tuple[str, ...], strict_plugins: bool,
        only_plugins: str | None) -> None:
    """Finetune language models from one pipeline.toml.

    \b
    ftp validate pipeline.toml     check a pipeline without loading anything heavy
    ftp run pipeline.toml          run it: data, model, training, evaluation, saving
    ftp plugins                    installed plugins and what they provide
    ftp components [KIND]          components by kind, with --options
    """
    ctx.obj = _State(plugin_opts, strict_plugins, only_plugins)


def _load(state: _State, pipeline: Path, overrides: tuple[str, ...]) -> Any:
    from ftp.config import load_pipeline

    plugins = state.plugins()
    for info in plugins.errors():
        click.echo(f"warning: plugin {info.name!r} failed to load: {info.error}", err=True)
    return load_pipeline(pipeline, plugins, list(overrides))


@cli.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a value, e.g. --set stages[0].epochs=1 (repeatable).")
@click.pass_obj
def validate(state: _State, pipeline: Path, overrides: tuple[str, ...]) -> None:
    """Check PIPELINE: its shape, every component's options, and the references between them."""
    try:
        p = _load(state, pipeline, overrides)
    except FtpError as exc:
        _fail(exc, False)
    stages = " → ".join(f"{s.name} ({s.method.entry.name})" for s in p.stages)
    click.echo(f"{pipeline}: ok — {len(p.datasets)} dataset(s), stages: {stages}, "
               f"{len(p.evaluations)} evaluation(s)")


@cli.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a value, e.g. --set stages[0].epochs=1 (repeatable).")
@click.option("--output-dir", "-o", type=click.Path(path_type=Path), default=None,
              help="Run directory (default: runs/NAME).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier run in the run directory.")
@click.option("--from-stage", default=None, metavar="NAME",
              help="Resume an earlier run of this pipeline at stage NAME, starting from the "
              "previous stage's saved model; earlier stages' outputs are kept.")
@click.option("--debug", is_flag=True, help="Show tracebacks and library warnings.")
@click.pass_obj
def run(state: _State, pipeline: Path, overrides: tuple[str, ...], output_dir: Path | None,
        overwrite: bool, from_stage: str | None, debug: bool) -> None:
    """Run PIPELINE: load data and model, train each stage, evaluate, save."""
    try:
        p = _load(state, pipeline, overrides)
        from ftp.rundir import RunDir
        from ftp.runner import Runner, default_run_dir

        where = default_run_dir(p, str(output_dir) if output_dir else None)
        if from_stage is not None:
            if overwrite:
                raise UserError("--from-stage keeps the earlier run; it cannot be combined "
                                     "with --overwrite")
            run_dir = RunDir.open_existing(where)
            runner = Runner(p, run_dir, from_stage=from_stage)
        else:
            run_dir = RunDir.create(where, overwrite=overwrite)
            runner = Runner(p, run_dir)
    except FtpError as exc:
        _fail(exc, debug)
    _quiet_libraries(debug)
    click.echo(f"ftp: running {p.name!r} into {run_dir.path}")
    try:
        runner.run()
    except FtpError as exc:
        click.echo(f"run directory (kept, marked failed): {run_dir.path}", err=True)
        _fail(exc, debug)
    except KeyboardInterrupt:
        click.echo(f"interrupted; run directory marked failed: {run_dir.path}", err=True)
        sys.exit(130)
    click.echo(f"done: {run_dir.path} (results.json, summary.md, model/)")


def _quiet_libraries(debug: bool) -> None:
    """Keep library chatter (warnings, download bars) out of the run's output unless --debug."""
    if debug:
        return
    import warnings

    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def plugins(state: _State, as_json: bool) -> None:
    """List installed plugins: status, distribution, version and components."""
    try:
        ps = state.plugins()
    except FtpError as exc:
        _fail(exc, False)
    infos = list(ps.infos.values())
    if as_json:
        click.echo(json.dumps([i.as_dict() for i in infos], indent=2))
        return
    for info in infos:
        where = f"{info.distribution} {info.version}".strip()
        click.echo(f"{info.name:<18} {info.status:<8} {where}")
        if info.error:
            click.echo(f"    {info.error}")
        for kind, name in info.components:
            click.echo(f"    {KIND_LABELS[kind]:<15} {name}")
        if info.settings:
            click.echo(f"    {'settings':<15} [plugins.{info.name}] {', '.join(info.settings)}")


@cli.command()
@click.argument("kind", required=False)
@click.option("--options", is_flag=True, help="Show each component's options.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def components(state: _State, kind: str | None, options: bool, as_json: bool) -> None:
    """List components, optionally of one KIND (loader, format, provider, method, evaluator)."""
    from ftp._suggest import did_you_mean

    if kind is not None and kind not in KIND_ALIASES:
        click.echo(f"error: unknown kind {kind!r}{did_you_mean(kind, KIND_ALIASES)}; kinds: "
                   "loader, format, provider, method, evaluator", err=True)
        sys.exit(2)
    try:
        reg = state.plugins().registry
    except FtpError as exc:
        _fail(exc, False)
    kinds = [KIND_ALIASES[kind]] if kind else list(KIND_LABELS)
    out: list[dict[str, Any]] = []
    for k in kinds:
        for name in reg.names(k):
            e = reg.entries[k][name]
            out.append({"kind": k, "name": name, "plugin": e.plugin, "summary": e.cls.summary(),
                        "options": _options(e.cls.Config)})
    if as_json:
        click.echo(json.dumps(out, indent=2, default=str))
        return
    current = None
    for item in out:
        if item["kind"] != current:
            current = item["kind"]
            click.echo(f"{KIND_LABELS[current]}s:")
        click.echo(f"  {item['name']:<16} {item['summary']}  [{item['plugin']}]")
        if options:
            for opt in item["options"]:
                default = "" if opt["required"] else f" = {opt['default']!r}"
                desc = f"  — {opt['description']}" if opt["description"] else ""
                click.echo(f"      {opt['name']}: {opt['type']}{default}{desc}")


def _options(config: Any) -> list[dict[str, Any]]:
    opts = []
    for name, f in config.model_fields.items():
        type_name = _type_name(f.annotation)
        opts.append({
            "name": name,
            "type": type_name,
            "required": f.is_required(),
            "default": None if f.is_required() else f.get_default(call_default_factory=True),
            "description": f.description or "",
        })
    return opts


def _type_name(ann: Any) -> str:
    """A readable type: ``"linear" | "cosine"`` for Literals, ``list[str]``, ``int | None``."""
    import typing

    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(ann))
    if origin is not None:
        args = typing.get_args(ann)
        if origin in (typing.Union, __import__("types").UnionType):
            return " | ".join(_type_name(a) for a in args)
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type_name(a) for a in args)}]" if args else name
    if ann is type(None):
        return "None"
    return getattr(ann, "__name__", None) or str(ann).replace("typing.", "")


@cli.command()
@click.pass_obj
def schema(state: _State) -> None:
    """Print a JSON schema of pipeline files for the installed plugins (editor completion)."""
    from ftp.schema import pipeline_schema

    try:
        ps = state.plugins()
        click.echo(json.dumps(pipeline_schema(ps.registry, ps.settings), indent=2))
    except FtpError as exc:
        _fail(exc, False)


@cli.group()
def new() -> None:
    """Create something new from a template."""


@new.command("plugin")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=None,
              help="Where to write it (default: ./ftp-NAME).")
def new_plugin(name: str, directory: Path | None) -> None:
    """Write a new plugin distribution NAME: one component of each kind, tests and README."""
    from ftp.scaffold import Names
    from ftp.scaffold import new_plugin as scaffold

    try:
        dest = scaffold(name, directory)
    except FtpError as exc:
        _fail(exc, False)
    names = Names.from_name(name)
    click.echo(f"created {dest}: distribution {names.distribution}, package {names.package}, "
               f"plugin {names.plugin!r}")
    click.echo(f"next: pip install -e {dest} && ftp plugins && pytest {dest}")


# `ftp data preview|inspect` and `ftp cache ls|clear` live with the code they drive.
from ftp.cli.data import cache, data  # noqa: E402  (they use the helpers above)

cli.add_command(data)
cli.add_command(cache)


def main() -> None:
    """Entry point of the ``ftp`` console script."""
    cli(prog_name="ftp")
