"""Named components with provenance: which plugin, and which distribution, provides each."""

from __future__ import annotations

from dataclasses import dataclass, field

from ftp.components import Component
from ftp.errors import UserError
from ftp.kinds import BY_NAME, KINDS, label
from ftp.suggest import unknown_name


@dataclass(frozen=True)
class Entry:
    """A registered component and where it came from."""

    kind: str
    name: str
    cls: type[Component]
    plugin: str
    distribution: str


@dataclass
class Registry:
    """All components by kind and name, with the problems found while building it."""

    entries: dict[str, dict[str, Entry]] = field(
        default_factory=lambda: {kind.name: {} for kind in KINDS}
    )
    conflicts: list[str] = field(default_factory=list)
    #: (kind, name) → the conflict message, for names that more than one plugin provides.
    duplicates: dict[tuple[str, str], str] = field(default_factory=dict)

    def add(self, entry: Entry) -> str | None:
        """Register ``entry``; return an error message if its name is taken or it is malformed."""
        base = BY_NAME[entry.kind].base
        if not (isinstance(entry.cls, type) and issubclass(entry.cls, base)):
            return (f"{entry.cls!r} returned by a {entry.kind} hook is not a "
                    f"{base.__name__} subclass")
        if not entry.name:
            return f"{entry.cls.__name__} has no name"
        taken = self.entries[entry.kind].get(entry.name)
        if taken is not None:
            msg = (
                f"{label(entry.kind)} {entry.name!r} is provided twice: by plugin "
                f"{taken.plugin!r} ({taken.distribution}) and by plugin {entry.plugin!r} "
                f"({entry.distribution})"
            )
            self.conflicts.append(msg)
            self.duplicates[(entry.kind, entry.name)] = msg
            return msg
        self.entries[entry.kind][entry.name] = entry
        return None

    def names(self, kind: str) -> list[str]:
        """Sorted names of one kind."""
        return sorted(self.entries[kind])

    def find(self, kind: str, name: str) -> Entry | None:
        """The entry, or None."""
        return self.entries[kind].get(name)

    def get(self, kind: str, name: str) -> Entry:
        """The entry, or a `UserError` with 'did you mean' and the available names."""
        entry = self.find(kind, name)
        if entry is None:
            raise UserError(self.unknown(kind, name))
        return entry

    def ambiguous(self, kind: str, name: str) -> str | None:
        """The conflict message when more than one plugin provides ``name``, else None."""
        msg = self.duplicates.get((kind, name))
        if msg is None:
            return None
        return f"{msg}; block the one you do not want with -p no:PLUGIN"

    def unknown(self, kind: str, name: str) -> str:
        """The message for an unknown name of ``kind``."""
        return unknown_name(label(kind), name, self.entries[kind])
