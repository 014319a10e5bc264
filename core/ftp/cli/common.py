"""What every ``ftp`` command shares: the plugin state, the common options, error reporting.

A command reports a user's mistake by raising an `FtpError`; `reports_errors` turns it into
the one line ``error: ...`` on stderr and the error's exit code (2 for a user error, 1 for a
failure while running), with the traceback only under ``--debug``.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ftp.errors import FtpError
from ftp.plugins import PluginSet, load_plugins

if TYPE_CHECKING:
    from ftp.config import Pipeline

F = TypeVar("F", bound=Callable[..., Any])


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

    def pipeline(self, path: Path, overrides: tuple[str, ...]) -> Pipeline:
        """Load and validate the pipeline at ``path``, warning about plugins that failed."""
        from ftp.config import load_pipeline

        plugins = self.plugins()
        for info in plugins.errors():
            click.echo(f"warning: plugin {info.name!r} failed to load: {info.error}", err=True)
        return load_pipeline(path, plugins, list(overrides), allow_code=self.allow_code)


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


def fail(exc: FtpError, debug: bool = False) -> None:
    """Print ``exc`` as one ``error:`` line (and the traceback with ``debug``) and exit."""
    if debug:
        import traceback

        traceback.print_exception(exc)
    from ftp.masking import mask_text

    click.echo(f"error: {mask_text(str(exc))}", err=True)
    if not debug and exc.exit_code == 1:
        click.echo("(rerun with --debug for the traceback)", err=True)
    sys.exit(exc.exit_code)


def reports_errors(command: F) -> F:
    """Make an `FtpError` raised by ``command`` the one-line message and its exit code.

    The traceback is shown when the command was given ``--debug`` (a ``debug`` parameter).
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except FtpError as exc:
            fail(exc, bool(kwargs.get("debug", False)))

    return wrapper  # type: ignore[return-value]  # functools.wraps keeps the signature


def quiet_libraries(debug: bool) -> None:
    """Keep library chatter (warnings, download bars) out of the output unless ``--debug``."""
    if debug:
        return
    import warnings

    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Every other library's tqdm bar (lm-eval's, a loader's): ftp draws its own progress.
    os.environ.setdefault("TQDM_DISABLE", "1")
    warnings.filterwarnings("ignore")
    # A library imported before this call (ftp used in-process) read those variables already.
    for module, switch in (("transformers.utils.logging", "disable_progress_bar"),
                           ("datasets.utils.logging", "disable_progress_bar"),
                           ("huggingface_hub.utils", "disable_progress_bars")):
        loaded = sys.modules.get(module)
        if loaded is not None and callable(getattr(loaded, switch, None)):
            getattr(loaded, switch)()
