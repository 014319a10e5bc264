"""The one table of component kinds; the registry, CLI, schema and listings derive theirs.

Adding a kind is one `Kind` entry here, its base class (in `ftp.components`) and its
registration hook spec (in `ftp.hookspecs`); see docs/components.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftp.components import (
    Component,
    DataLoader,
    Evaluator,
    Format,
    Launcher,
    Method,
    ModelProvider,
    Reward,
)


@dataclass(frozen=True)
class Kind:
    """One kind of component.

    Attributes:
        name: The kind's identifier, as ``Component.kind`` and ``--json`` output spell it.
        label: How messages and listings name it (``"data loader"``).
        base: The class every component of the kind subclasses.
        hook: The registration hook that returns its components.
        key: The pipeline key that names a component of the kind (``loader = "json"``).
        aliases: What ``ftp components KIND`` also accepts, besides ``name`` and ``key``.

    """

    name: str
    label: str
    base: type[Component]
    hook: str
    key: str
    aliases: tuple[str, ...] = ()

    def spellings(self) -> set[str]:
        """Every way the command line accepts to name this kind."""
        return {self.name, self.name.replace("_", "-"), self.key, *self.aliases}


KINDS: tuple[Kind, ...] = (
    Kind("data_loader", "data loader", DataLoader, "ftp_data_loaders", "loader",
         ("loaders",)),
    Kind("format", "format", Format, "ftp_formats", "format", ("formats",)),
    Kind("model_provider", "model provider", ModelProvider, "ftp_model_providers", "provider",
         ("providers",)),
    Kind("method", "method", Method, "ftp_methods", "method", ("methods",)),
    Kind("evaluator", "evaluator", Evaluator, "ftp_evaluators", "evaluator", ("evaluators",)),
    Kind("reward", "reward", Reward, "ftp_rewards", "reward", ("rewards",)),
    Kind("launcher", "launcher", Launcher, "ftp_launchers", "launcher", ("launchers",)),
)

#: Kind name → its entry.
BY_NAME: dict[str, Kind] = {kind.name: kind for kind in KINDS}


def kind_named(spelling: str) -> Kind | None:
    """The kind a command-line spelling (``loader``, ``data-loader``, ``methods``) means."""
    for kind in KINDS:
        if spelling in kind.spellings():
            return kind
    return None


def label(kind: str) -> str:
    """The label of the kind named ``kind`` (``"data_loader"`` → ``"data loader"``)."""
    return BY_NAME[kind].label
