"""``ftp new plugin NAME``: a new plugin distribution, from the template in ``plugin_template/``.

The template is a complete, tested plugin with one component of each kind; ``contrib/
ftp-template`` in ftp's repository is exactly what ``ftp new plugin template`` writes. Three
placeholders are filled in, in file contents and paths: ``{{plugin}}`` (the plugin's name,
which also prefixes each component's name), ``{{package}}`` (the import package,
``__package__`` in paths) and ``{{distribution}}`` (the name on PyPI).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ftp.errors import UserError

TEMPLATE = Path(__file__).parent / "plugin_template"
SUFFIX = ".tmpl"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class Names:
    """The names a new plugin gets from NAME."""

    plugin: str
    package: str
    distribution: str

    @classmethod
    def from_name(cls, name: str) -> Names:
        """Derive the names; ``ftp-`` in front of NAME is dropped (the distribution adds it).

        Raises:
            UserError: when NAME is not lower-case words joined by hyphens.

        """
        plugin = name.removeprefix("ftp-")
        if not NAME_PATTERN.match(plugin):
            raise UserError(f"plugin name {name!r}: use lower-case letters and digits, words "
                            "joined by hyphens, starting with a letter (e.g. 'sql-data')")
        return cls(plugin, "ftp_" + plugin.replace("-", "_"), "ftp-" + plugin)

    def fill(self, text: str) -> str:
        """Fill the placeholders in ``text``."""
        return (text.replace("{{plugin}}", self.plugin)
                .replace("{{package}}", self.package)
                .replace("{{distribution}}", self.distribution))


def template_files() -> list[Path]:
    """The template's files, relative to the template folder, sorted."""
    return sorted(p.relative_to(TEMPLATE) for p in TEMPLATE.rglob(f"*{SUFFIX}"))


def render(names: Names) -> dict[Path, str]:
    """The new plugin's files (relative path → text), in memory."""
    out = {}
    for rel in template_files():
        target = Path(*(names.package if part == "__package__" else part for part in rel.parts))
        out[target.with_name(target.name.removesuffix(SUFFIX))] = names.fill(
            (TEMPLATE / rel).read_text(encoding="utf-8"))
    return out


def new_plugin(name: str, directory: Path | None = None) -> Path:
    """Write a new plugin distribution into ``directory`` (default ``./ftp-NAME``).

    Raises:
        UserError: for a bad name, or when the directory exists and is not empty.

    """
    names = Names.from_name(name)
    dest = Path(directory) if directory is not None else Path(names.distribution)
    if dest.exists() and any(dest.iterdir()):
        raise UserError(f"{dest} already exists and is not empty; choose another --dir")
    for rel, text in render(names).items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return dest
