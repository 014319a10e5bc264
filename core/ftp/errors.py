"""Errors that ftp turns into one clear line and an exit code.

`UserError` (exit 2) is a mistake in what the user gave us: a file, a value, an argument.
`RunError` (exit 1) is a failure while running something the user asked for, attributed to
the pipeline step, component and plugin where it happened.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftp.masking import MASK, is_secret_key, mask_text


class FtpError(Exception):
    """Base of every error ftp reports without a traceback."""

    exit_code = 1


class UserError(FtpError):
    """Bad input: a file, a config value, a command-line argument. Exit code 2."""

    exit_code = 2


class RunError(FtpError):
    """A failure while running a pipeline step. Exit code 1."""

    exit_code = 1


class RanksStopped(RunError):
    """A process of a distributed run died (a signal, a crash); the launcher stopped the rest.

    Its message is the whole story (which rank, what killed it), so no traceback is offered.
    """


@dataclass(frozen=True)
class Problem:
    """One problem found in a pipeline file.

    Attributes:
        path: Where in the TOML, e.g. ``stages[0].learning_rate``.
        message: What is wrong and, where possible, what to do.
        value: The offending value, when there is one.

    """

    path: str
    message: str
    value: object = None
    has_value: bool = False

    def __str__(self) -> str:
        value = self.value
        if self.has_value and is_secret_key(self.path.rsplit(".", 1)[-1]):
            value = MASK  # a secret shown on the terminal is a secret leaked
        shown = f" (got {mask_text(repr(value))})" if self.has_value else ""
        where = self.path or "<pipeline>"
        return f"{where}: {self.message}{shown}"


class ConfigError(UserError):
    """Every problem found in a pipeline file, reported together."""

    def __init__(self, problems: list[Problem], source: str = "") -> None:
        self.problems = problems
        self.source = source
        head = f"{source}: " if source else ""
        noun = "problem" if len(problems) == 1 else "problems"
        lines = [f"{head}{len(problems)} {noun} in the pipeline"]
        lines += [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))
