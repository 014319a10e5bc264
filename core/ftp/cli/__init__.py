"""The ``ftp`` command line: the root group, and the command groups it is made of.

Exit codes: 0 success, 2 a user error (bad file, config or arguments), 1 a failure while
running, 3 a run that finished with a failed requirement (`ftp.gates`), 143 stopped by SIGTERM,
130 stopped by SIGINT (Ctrl-C). ``--help``, ``validate``,
``plugins``, ``components`` and ``schema`` import neither torch, transformers, trl nor
datasets.

One module per command group: `ftp.cli.run` (run, validate, resume), `ftp.cli.listing` (plugins,
components, schema, new), `ftp.cli.data` (data preview/inspect), `ftp.cli.cache` (cache
ls/clear), `ftp.cli.report` (report, compare), `ftp.cli.planning` (plan, models compare); what
they share is in `ftp.cli.common`.
"""

from __future__ import annotations

import os
from typing import Any

import click

from ftp.cli import cache, data, listing, planning, report, run
from ftp.cli.common import State
from ftp.errors import FtpError
from ftp.plugins import ONLY_ENV, in_process_key, load_plugins


class PluginCommandsGroup(click.Group):
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
        """The built-in commands and the plugins' commands, sorted."""
        return sorted(set(super().list_commands(ctx)) | set(self._extra(ctx)))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        """A built-in command, else a plugin's command of that name."""
        return super().get_command(ctx, name) or self._extra(ctx).get(name)


@click.group(cls=PluginCommandsGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
    ctx.obj = State(plugin_opts, strict_plugins, only_plugins)


for _module in (run, listing, data, cache, report, planning):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    """Entry point of the ``ftp`` console script."""
    from ftp import allocator

    allocator.allow_switch()  # this process is the command's own: it may re-execute itself
    cli(prog_name="ftp")
