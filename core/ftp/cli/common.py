"""What every ``ftp`` command shares: the plugin state, the common options, error reporting.

A command reports a user's mistake by raising an `FtpError`; `reports_errors` (from
`ftp.commandline`, public so that plugins' commands share it) turns it into the one line
``error: ...`` on stderr and the error's exit code.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

# Re-exported: the error reporting is public (ftp.commandline) so plugin commands share it.
from ftp.commandline import fail as fail
from ftp.commandline import quiet_libraries as quiet_libraries
from ftp.commandline import reports_errors as reports_errors
from ftp.plugins import PluginSet, load_plugins

if TYPE_CHECKING:
    from ftp.config import Pipeline


class State:
    """The group's plugin options, and the plugin set they load (built once, when needed).

    Args:
        plugin_opts: ``-p`` values.
        strict: ``--strict-plugins``.
        only: ``--only-plugins``.

    """

    def __init__(self, plugin_opts: tuple[str, ...], strict: bool,
                 only: str | None = None) -> None:
        self.plugin_opts = plugin_opts
        self.strict = strict
        self.only = only
        self.allow_code = False  # --allow-code: see allow_code_option
        self._plugins: PluginSet | None = None

    def plugins(self) -> PluginSet:
        """The plugin set, loaded on first use."""
        if self._plugins is None:
            self._plugins = load_plugins(self.plugin_opts, strict=self.strict, only=self.only)
        return self._plugins

    def pipeline(self, path: Path, overrides: tuple[str, ...],
                 rehearsal: bool = False) -> Pipeline:
        """Load and validate the pipeline at ``path``, warning about plugins that failed.

        ``rehearsal``: checked as for the machine it is bound for (`ftp.config.load_pipeline`).
        """
        from ftp.config import load_pipeline

        plugins = self.plugins()
        for info in plugins.errors():
            click.echo(f"warning: plugin {info.name!r} failed to load: {info.error}", err=True)
        return load_pipeline(path, plugins, list(overrides), allow_code=self.allow_code,
                             rehearsal=rehearsal)


pass_state = click.make_pass_decorator(State)

#: ``--set KEY=VALUE``, repeatable: the overrides of a command that reads a pipeline.
set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a value, e.g. --set stages[0].epochs=1 (repeatable).")

#: ``--debug``: tracebacks and library warnings.
debug_option = click.option("--debug", is_flag=True,
                            help="Show tracebacks and library warnings.")


def _allow_code(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    state = ctx.find_object(State)
    if value and state is not None:
        state.allow_code = True


#: ``--allow-code``: consent to the code a pipeline file names (see `ftp.consent`).
allow_code_option = click.option(
    "--allow-code", is_flag=True, expose_value=False, callback=_allow_code,
    help="Allow the code the pipeline file names ([pipeline] plugins, trust_remote_code); "
    "also FTP_ALLOW_CODE=1.")
