"""What every command uses to talk to its user, ftp's own and plugins' alike.

A command reports a user's mistake by raising an `FtpError`; `reports_errors` turns it into
the one line ``error: ...`` on stderr (secrets masked) and the error's exit code (2 for a user
error, 1 for a failure while running), with the traceback only under ``--debug``.
`quiet_libraries` keeps library chatter out of what the command prints. Plugins that add
commands (the ``ftp_cli_commands`` hook) use these through ``ftp``'s public API rather than
reaching into ``ftp.cli``.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ftp.errors import FtpError

F = TypeVar("F", bound=Callable[..., Any])


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
    """Keep library chatter (warnings, download bars) out of the output unless ``debug``."""
    if debug:
        return
    import warnings

    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # datasets warns on its own logger, e.g. that a trainer's map function could not be hashed
    # for its cache (TRL's ORPO trainer): nothing a user of ftp can act on.
    os.environ.setdefault("DATASETS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Every other library's tqdm bar (lm-eval's, a loader's): ftp draws its own progress.
    os.environ.setdefault("TQDM_DISABLE", "1")
    warnings.filterwarnings("ignore")
    # A library imported before this call (ftp used in-process) read those variables already.
    for module, switch in (("transformers.utils.logging", "disable_progress_bar"),
                           ("datasets.utils.logging", "disable_progress_bar"),
                           ("datasets.utils.logging", "set_verbosity_error"),
                           ("huggingface_hub.utils", "disable_progress_bars")):
        loaded = sys.modules.get(module)
        if loaded is not None and callable(getattr(loaded, switch, None)):
            getattr(loaded, switch)()
