"""``ftp plugins``, ``ftp components``, ``ftp schema`` and ``ftp new``: what is installed."""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any

import click

from ftp.cli.common import State, pass_state, reports_errors
from ftp.errors import UserError
from ftp.kinds import KINDS, kind_named, label


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
@reports_errors
def plugins(state: State, as_json: bool) -> None:
    """List installed plugins: status, distribution, version and components."""
    infos = list(state.plugins().infos.values())
    if as_json:
        click.echo(json.dumps([i.as_dict() for i in infos], indent=2))
        return
    for info in infos:
        where = f"{info.distribution} {info.version}".strip()
        click.echo(f"{info.name:<18} {info.status:<8} {where}")
        if info.error:
            click.echo(f"    {info.error}")
        for kind, name in info.components:
            click.echo(f"    {label(kind):<15} {name}")
        if info.settings:
            click.echo(f"    {'settings':<15} [plugins.{info.name}] {', '.join(info.settings)}")


@click.command(help="List components, optionally of one KIND ("
               + ", ".join(k.key for k in KINDS) + ").")
@click.argument("kind", required=False)
@click.option("--options", is_flag=True, help="Show each component's options.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
@reports_errors
def components(state: State, kind: str | None, options: bool, as_json: bool) -> None:
    """List components, optionally of one KIND (the kinds are `ftp.kinds.KINDS`)."""
    from ftp.suggest import did_you_mean

    chosen = kind_named(kind) if kind is not None else None
    if kind is not None and chosen is None:
        spellings = {s for k in KINDS for s in k.spellings()}
        raise UserError(f"unknown kind {kind!r}{did_you_mean(kind, spellings)}; kinds: "
                        + ", ".join(k.key for k in KINDS))
    reg = state.plugins().registry
    kinds = [chosen.name] if chosen else [k.name for k in KINDS]
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
            click.echo(f"{label(current)}s:")
        click.echo(f"  {item['name']:<16} {item['summary']}  [{item['plugin']}]")
        if options:
            for opt in item["options"]:
                default = "" if opt["required"] else f" = {opt['default']!r}"
                desc = f"  — {opt['description']}" if opt["description"] else ""
                click.echo(f"      {opt['name']}: {opt['type']}{default}{desc}")


def _options(config: Any) -> list[dict[str, Any]]:
    opts = []
    for name, f in config.model_fields.items():
        opts.append({
            "name": name,
            "type": _type_name(f.annotation),
            "required": f.is_required(),
            "default": None if f.is_required() else f.get_default(call_default_factory=True),
            "description": f.description or "",
        })
    return opts


def _type_name(ann: Any) -> str:
    """A readable type: ``"linear" | "cosine"`` for Literals, ``list[str]``, ``int | None``."""
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(ann))
    if origin is not None:
        args = typing.get_args(ann)
        if origin in (typing.Union, types.UnionType):
            return " | ".join(_type_name(a) for a in args)
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type_name(a) for a in args)}]" if args else name
    if ann is type(None):
        return "None"
    return getattr(ann, "__name__", None) or str(ann).replace("typing.", "")


@click.command()
@pass_state
@reports_errors
def schema(state: State) -> None:
    """Print a JSON schema of pipeline files for the installed plugins (editor completion)."""
    from ftp.schema import pipeline_schema

    ps = state.plugins()
    click.echo(json.dumps(pipeline_schema(ps.registry, ps.settings), indent=2))


@click.group()
def new() -> None:
    """Create something new from a template."""


@new.command("plugin")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=None,
              help="Where to write it (default: ./ftp-NAME).")
@reports_errors
def new_plugin(name: str, directory: Path | None) -> None:
    """Write a new plugin distribution NAME: one component of each kind, tests and README."""
    from ftp.scaffold import Names
    from ftp.scaffold import new_plugin as scaffold

    dest = scaffold(name, directory)
    names = Names.from_name(name)
    click.echo(f"created {dest}: distribution {names.distribution}, package {names.package}, "
               f"plugin {names.plugin!r}")
    # The test extra brings pytest, which the suggested next command runs.
    click.echo(f'next: pip install -e "{dest}[test]" && ftp plugins && pytest {dest}')


COMMANDS = [plugins, components, schema, new]
