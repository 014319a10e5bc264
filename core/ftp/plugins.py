"""Loading plugins one by one, so that a broken one is reported instead of breaking the rest.

Plugins come from three places, in this order: installed distributions (entry points in the
``ftp.plugins`` group, the built-ins included), modules named with ``-p MODULE`` or
``-p path/to/file.py`` (or ``FTP_PLUGINS``), and modules listed in the pipeline file's
``[pipeline] plugins``. ``-p no:NAME`` or ``FTP_DISABLE_PLUGINS=NAME,...`` blocks one.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from ftp import hookspecs
from ftp.errors import RunError, UserError
from ftp.registry import HOOKS, Entry, Registry

ENTRY_POINT_GROUP = "ftp.plugins"
DISABLE_ENV = "FTP_DISABLE_PLUGINS"
EXTRA_ENV = "FTP_PLUGINS"


@dataclass
class PluginInfo:
    """One plugin as ``ftp plugins`` shows it."""

    name: str
    module: str
    distribution: str
    version: str
    status: str = "ok"  # ok | error | blocked
    error: str = ""
    components: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "error": self.error,
            "components": [{"kind": k, "name": n} for k, n in self.components],
        }


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


class PluginSet:
    """The plugin manager, what each plugin provides, and what went wrong."""

    def __init__(self, blocked: Iterable[str] = ()) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.blocked = set(blocked)
        self.infos: dict[str, PluginInfo] = {}
        self.registry = Registry()

    # -- loading --------------------------------------------------------------------------

    def load_entry_points(self) -> None:
        """Load every installed plugin in the ``ftp.plugins`` entry-point group."""
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            info = PluginInfo(ep.name, ep.value, dist, version)
            if self._is_blocked(info):
                continue
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin must not break the others
                self._fail(info, f"import failed: {_one_line(exc)}")
                continue
            self._register(module, info)

    def load_module(self, spec: str, base_dir: Path | None = None) -> None:
        """Load a local plugin: an importable module name or a path to a ``.py`` file.

        Raises:
            UserError: when the module or file cannot be found or imported.

        """
        if spec.endswith(".py") or os.sep in spec or "/" in spec:
            path = Path(spec).expanduser()
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            if not path.is_file():
                raise UserError(f"plugin file not found: {path}")
            name = path.stem
            if name in self.infos:
                return
            info = PluginInfo(name, str(path), "<local file>", "")
            if self._is_blocked(info):
                return  # blocked plugins are never executed
            module = self._import_file(path, info)
        else:
            name = spec
            if name in self.infos:
                return
            info = PluginInfo(name, spec, "<local module>", "")
            if self._is_blocked(info):
                return
            try:
                module = importlib.import_module(spec)
            except Exception as exc:
                raise UserError(
                    f"plugin module {spec!r} could not be imported: {_one_line(exc)}"
                ) from exc
        self._register(module, info)

    def _import_file(self, path: Path, info: PluginInfo) -> ModuleType:
        mod_name = f"ftp_local_plugin_{path.stem}"
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise UserError(f"plugin file {path} is not a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(mod_name, None)  # no half-imported module left behind
            raise UserError(f"plugin file {path} failed to import: {_one_line(exc)}") from exc
        return module

    def load_extra(self, spec: str) -> None:
        """Load a ``-p``/``FTP_PLUGINS`` module; a failure is reported, like an installed one's.

        It becomes fatal only with ``--strict-plugins`` or when a pipeline needs what the
        plugin would have provided (the 'unknown name' message then names the failure).
        """
        try:
            self.load_module(spec)
        except UserError as exc:
            is_file = spec.endswith(".py") or os.sep in spec or "/" in spec
            name = Path(spec).stem if is_file else spec
            where = "<local file>" if is_file else "<local module>"
            self._fail(PluginInfo(name, spec, where, ""), str(exc))

    def _is_blocked(self, info: PluginInfo) -> bool:
        if info.name in self.blocked:
            info.status = "blocked"
            self.infos[info.name] = info
            return True
        return False

    def _fail(self, info: PluginInfo, message: str) -> None:
        info.status = "error"
        info.error = message
        self.infos[info.name] = info

    def _register(self, module: Any, info: PluginInfo) -> None:
        try:
            self.pm.register(module, name=info.name)
        except Exception as exc:
            self._fail(info, f"registration failed: {_one_line(exc)}")
            return
        self.infos[info.name] = info
        added: list[Entry] = []
        for hook_name, kind in HOOKS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin_name != info.name:
                    continue
                try:
                    classes = impl.function() or []
                except Exception as exc:
                    self._fail(info, f"{hook_name}() failed: {_one_line(exc)}")
                    break
                for cls in classes:
                    entry = Entry(kind, getattr(cls, "name", ""), cls, info.name, info.distribution)
                    problem = self.registry.add(entry)
                    if problem:
                        self._fail(info, problem)
                    else:
                        added.append(entry)
                        info.components.append((kind, entry.name))
        if info.status == "error":
            # Half a plugin is worse than none: take back what it did register.
            for entry in added:
                self.registry.entries[entry.kind].pop(entry.name, None)
            info.components.clear()
            self.pm.unregister(name=info.name)

    # -- use ------------------------------------------------------------------------------

    def errors(self) -> list[PluginInfo]:
        """Plugins that failed to load."""
        return [i for i in self.infos.values() if i.status == "error"]

    def check_strict(self) -> None:
        """Raise if any plugin failed (``--strict-plugins``)."""
        broken = self.errors()
        if broken:
            raise UserError(
                "plugin errors (--strict-plugins): "
                + "; ".join(f"{i.name}: {i.error}" for i in broken)
            )

    def broken_note(self) -> str:
        """A note to append to 'unknown name' errors when some plugin failed or is blocked."""
        notes = [f"plugin {i.name!r} failed: {i.error}" for i in self.errors()]
        notes += [f"plugin {i.name!r} is blocked by -p no:{i.name} or {DISABLE_ENV}"
                  for i in self.infos.values() if i.status == "blocked"]
        return f" (note: {'; '.join(notes)})" if notes else ""

    def call(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call a lifecycle hook in every plugin, attributing any failure to its plugin."""
        results = []
        for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
            args = {name: kwargs[name] for name in impl.argnames}
            try:
                out = impl.function(**args)
            except Exception as exc:
                raise RunError(f"plugin {impl.plugin_name!r} failed in {hook_name}: "
                               f"{_one_line(exc)}") from exc
            if out is not None:
                results.append(out)
        return results


def blocked_from(options: Iterable[str]) -> tuple[set[str], list[str]]:
    """Split ``-p`` values and ``FTP_DISABLE_PLUGINS``/``FTP_PLUGINS`` into (blocked, extra)."""
    blocked = {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}
    extra = [n.strip() for n in os.environ.get(EXTRA_ENV, "").split(",") if n.strip()]
    for opt in options:
        if opt.startswith("no:"):
            blocked.add(opt[3:])
        else:
            extra.append(opt)
    return blocked, extra


def load_plugins(options: Iterable[str] = (), strict: bool = False) -> PluginSet:
    """Build the plugin set for a command: entry points, then ``-p`` modules.

    Args:
        options: ``-p`` values: ``no:NAME`` blocks a plugin, anything else loads a module.
        strict: Fail on any plugin error instead of reporting it.

    """
    blocked, extra = blocked_from(options)
    plugins = PluginSet(blocked)
    plugins.load_entry_points()
    for spec in extra:
        plugins.load_extra(spec)
    if strict:
        plugins.check_strict()
    return plugins
