"""Loading plugins one by one, so that a broken one is reported instead of breaking the rest.

Plugins come from four places, in this order: installed distributions (entry points in the
``ftp.plugins`` group, the built-ins included), plugin objects registered in-process (what
``ftp.testing`` uses), modules named with ``-p MODULE`` or ``-p path/to/file.py`` (or
``FTP_PLUGINS``), and modules listed in the pipeline file's ``[pipeline] plugins``.

Control: ``-p no:NAME`` or ``FTP_DISABLE_PLUGINS=NAME,...`` blocks one plugin;
``--only-plugins NAME,...`` or ``FTP_ONLY_PLUGINS`` allows only the named installed third-party
plugins (ftp's own built-ins always load unless blocked by name; plugins named with ``-p``
load because naming them is explicit); ``FTP_TRACE_HOOKS=1`` prints every hook call with its
plugin and duration to stderr.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from ftp import hookspecs
from ftp.components import StrictConfig
from ftp.errors import RunError, UserError
from ftp.hookcalls import Guarded, HookFailure, Tracer, one_line
from ftp.kinds import KINDS
from ftp.registry import Entry, Registry

ENTRY_POINT_GROUP = "ftp.plugins"
#: The registration hook through which a plugin declares its settings (``[plugins.NAME]``).
SETTINGS_HOOK = "ftp_plugin_settings"
#: Hooks whose failure fails the plugin (not isolated like lifecycle hooks).
REGISTRATION_HOOKS = {kind.hook for kind in KINDS} | {SETTINGS_HOOK}
DISABLE_ENV = "FTP_DISABLE_PLUGINS"
EXTRA_ENV = "FTP_PLUGINS"
ONLY_ENV = "FTP_ONLY_PLUGINS"
TRACE_ENV = "FTP_TRACE_HOOKS"
#: The distribution whose entry points are ftp's built-in plugins.
BUILTIN_DISTRIBUTION = "ftp"

#: Plugin objects registered in-process, as (name, object): see `registered`.
_IN_PROCESS: list[tuple[str, object]] = []


@dataclass
class PluginInfo:
    """One plugin as ``ftp plugins`` shows it.

    Attributes:
        name: The plugin's name: its entry point's name, module name or file stem.
        module: Where its code is: the entry point's value, a module name or a file.
        distribution: The installed distribution, or ``<local file>``, ``<local module>``,
            ``<in-process>``.
        version: The distribution's version ('' for local plugins).
        status: ``ok``, ``error`` (it failed and provides nothing) or ``blocked``.
        error: Why it failed (status ``error``) or why it is blocked (status ``blocked``).
        components: (kind, name) of each component it provides.
        settings: The names of the settings it declares (``[plugins.NAME]``), if any.

    """

    name: str
    module: str
    distribution: str
    version: str
    status: str = "ok"  # ok | error | blocked
    error: str = ""
    components: list[tuple[str, str]] = field(default_factory=list)
    settings: list[str] = field(default_factory=list)

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
            "settings": list(self.settings),
        }


def _settings_problem(cls: Any) -> str:
    """Why ``cls`` cannot be a plugin's settings class, or '' when it can."""
    if not (isinstance(cls, type) and issubclass(cls, StrictConfig)):
        return f"returned {cls!r}, not an ftp.StrictConfig subclass"
    # A pipeline without the plugin's table gets the defaults, so every setting needs one.
    required = [name for name, f in cls.model_fields.items() if f.is_required()]
    if required:
        return (f"returned {cls.__name__}, whose setting {required[0]!r} has no default; "
                "give every setting a default")
    return ""


def _builtins_first(ep: Any) -> tuple[bool, str]:
    dist = ep.dist.name if ep.dist else ""
    return (dist != BUILTIN_DISTRIBUTION, ep.name)


def _stderr(line: str) -> None:
    from ftp.masking import mask_text

    print(mask_text(line), file=sys.stderr, flush=True)


def _env_list(name: str) -> list[str]:
    return [n.strip() for n in os.environ.get(name, "").split(",") if n.strip()]


class PluginSet:
    """The plugin manager, what each plugin provides, and what went wrong.

    Args:
        blocked: Plugin names never to load (``-p no:NAME``).
        only: When given, the only installed third-party plugins to load (the allow-list);
            ftp's built-ins are not affected.
        strict: Make a failing lifecycle hook fail the command instead of a warning.
        trace: Print every hook call, its plugin and its duration (``FTP_TRACE_HOOKS``);
            None reads the environment.
        report: Where warnings and trace lines go (default: stderr).

    """

    def __init__(self, blocked: Iterable[str] = (), only: Iterable[str] | None = None,
                 strict: bool = False, trace: bool | None = None,
                 report: Callable[[str], None] = _stderr) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.blocked = set(blocked)
        self.only = set(only) if only is not None else None
        self.strict = strict
        self.trace = (os.environ.get(TRACE_ENV, "") not in ("", "0")) if trace is None else trace
        self.report = report
        self.infos: dict[str, PluginInfo] = {}
        self.registry = Registry()
        #: Plugin name → the `StrictConfig` subclass of its settings (``ftp_plugin_settings``).
        self.settings: dict[str, type[StrictConfig]] = {}
        #: Lifecycle hook failures seen so far (each was reported as a warning).
        self.hook_failures: list[HookFailure] = []
        self.tracer: Tracer | None = None
        if self.trace:
            self.tracer = Tracer(report)
            self.tracer.install(self.pm)

    # -- loading --------------------------------------------------------------------------

    def load_entry_points(self, builtins_only: bool = False) -> None:
        """Load the installed plugins in the ``ftp.plugins`` entry-point group.

        Args:
            builtins_only: Load only ftp's own built-in plugins (what ``ftp.testing`` uses,
                so that a plugin's tests do not depend on what else is installed).

        """
        # An in-process plugin (ftp.testing) replaces an installed one of the same name, so a
        # plugin's tests exercise its source even when an older copy is installed.
        replaced = {name for name, _ in _IN_PROCESS}
        # Built-ins first: a third-party plugin reusing a built-in name is the one refused,
        # whatever its name sorts as, so installing it cannot break pipelines that work.
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=_builtins_first):
            if ep.name in replaced:
                continue
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            builtin = dist == BUILTIN_DISTRIBUTION
            if builtins_only and not builtin:
                continue
            info = PluginInfo(ep.name, ep.value, dist, version)
            taken = self.infos.get(ep.name)
            if taken is not None:
                # Two distributions claim one plugin name: the second is refused, both named.
                info.name = f"{ep.name} ({dist})"
                self._fail(info, f"plugin name {ep.name!r} is already used by distribution "
                           f"{taken.distribution!r}; uninstall one of them")
                continue
            if self._is_blocked(info):
                continue
            if not builtin and self.only is not None and ep.name not in self.only:
                info.status = "blocked"
                info.error = f"not in the allow-list ({ONLY_ENV} / --only-plugins)"
                self.infos[info.name] = info
                continue
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin must not break the others
                self._fail(info, f"import failed: {one_line(exc)}")
                continue
            self._register(module, info)

    def add(self, plugin: object, name: str, distribution: str = "<in-process>",
            version: str = "") -> PluginInfo:
        """Register a plugin object (a module, class or instance with hook implementations).

        Its failures are recorded like an installed plugin's; the returned info says how it
        went.
        """
        info = PluginInfo(name, getattr(plugin, "__name__", type(plugin).__name__),
                          distribution, version)
        if not self._is_blocked(info):
            self._register(plugin, info)
        return self.infos[name]

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
                    f"plugin module {spec!r} could not be imported: {one_line(exc)}"
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
            raise UserError(f"plugin file {path} failed to import: {one_line(exc)}") from exc
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
            info.error = f"blocked by -p no:{info.name} or {DISABLE_ENV}"
            self.infos[info.name] = info
            return True
        return False

    def _fail(self, info: PluginInfo, message: str) -> None:
        info.status = "error"
        info.error = message
        self.infos[info.name] = info

    def _register(self, plugin: Any, info: PluginInfo) -> None:
        guarded = Guarded(plugin, info.name, self.pm, REGISTRATION_HOOKS, self._hook_failed,
                          self.tracer.timings if self.tracer else None)
        try:
            self.pm.register(guarded, name=info.name)
        except Exception as exc:
            self._fail(info, f"registration failed: {one_line(exc)}")
            return
        self.infos[info.name] = info
        added: list[Entry] = []
        for kind in KINDS:
            try:
                classes = [cls for found in self._call_one(kind.hook, info.name)
                           for cls in found or []]
            except Exception as exc:
                self._fail(info, f"{kind.hook}() failed: {one_line(exc)}")
                break
            for cls in classes:
                entry = Entry(kind.name, getattr(cls, "name", ""), cls, info.name,
                              info.distribution)
                problem = self.registry.add(entry)
                if problem:
                    self._fail(info, problem)
                else:
                    added.append(entry)
                    info.components.append((kind.name, entry.name))
        if info.status != "error":
            self._register_settings(info)
        if info.status == "error":
            # Half a plugin is worse than none: take back what it did register.
            for entry in added:
                self.registry.entries[entry.kind].pop(entry.name, None)
            info.components.clear()
            info.settings.clear()
            self.settings.pop(info.name, None)
            self.pm.unregister(name=info.name)

    def _call_one(self, hook_name: str, plugin_name: str) -> list[Any]:
        """Call one plugin's implementation of a registration hook, through pluggy.

        One plugin at a time, so that a failure is that plugin's alone and every component
        knows who provided it.
        """
        others = [p for name, p in self.pm.list_name_plugin() if name != plugin_name]
        return self.pm.subset_hook_caller(hook_name, remove_plugins=others)()

    def _register_settings(self, info: PluginInfo) -> None:
        """Record the settings class ``ftp_plugin_settings`` returns; a bad one fails the plugin."""
        try:
            found = self._call_one(SETTINGS_HOOK, info.name)
        except Exception as exc:
            self._fail(info, f"{SETTINGS_HOOK}() failed: {one_line(exc)}")
            return
        if not found:
            return
        cls = found[0]
        problem = _settings_problem(cls)
        if problem:
            self._fail(info, f"{SETTINGS_HOOK}() {problem}")
            return
        self.settings[info.name] = cls
        info.settings = list(cls.model_fields)

    def _hook_failed(self, plugin: str, hook: str, exc: Exception) -> None:
        """Report a lifecycle hook implementation that raised; with ``strict``, fail the run."""
        failure = HookFailure(plugin, hook, one_line(exc))
        if self.strict:
            raise RunError(f"{failure} (--strict-plugins)") from exc
        self.hook_failures.append(failure)
        self.report(f"warning: {failure}; ignored, the run goes on "
                    "(--strict-plugins makes this fatal)")

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
        notes = [f"plugin {i.name!r} failed ({i.error}): fix or reinstall it, then check "
                 "`ftp plugins`" for i in self.errors()]
        notes += [f"plugin {i.name!r} is {i.error}" for i in self.infos.values()
                  if i.status == "blocked"]
        return f" (note: {'; '.join(notes)})" if notes else ""

    def call(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call a lifecycle hook through pluggy; return the non-None results.

        Implementations run in pluggy's order (the plugin registered last first;
        ``tryfirst``/``trylast`` and wrappers as pluggy documents them); the results come back
        in the order the plugins were registered. An implementation that raises is reported
        as one warning line naming the plugin and the hook, recorded in `hook_failures`, and
        skipped: an observer must not break the run it observes. With ``strict`` it raises
        `RunError` instead. A wrapper that raises fails the whole call, reported the same way.
        """
        caller = getattr(self.pm.hook, hook_name)
        try:
            results = caller(**kwargs)
        except RunError:
            raise
        except Exception as exc:
            wrappers = [i.plugin_name for i in caller.get_hookimpls()
                        if i.wrapper or i.hookwrapper]
            self._hook_failed(",".join(wrappers) or "?", hook_name, exc)
            return []
        return list(reversed(results))


@contextlib.contextmanager
def registered(plugin: object, name: str | None = None) -> Iterator[None]:
    """Add ``plugin`` to every plugin set this process builds, until the block ends.

    For tests (``ftp.testing.plugin``): the ``ftp`` command run in-process (click's
    ``CliRunner``) then sees the plugin as if it were installed, as distribution
    ``<in-process>``.
    """
    entry = (name or str(getattr(plugin, "__name__", type(plugin).__name__)), plugin)
    _IN_PROCESS.append(entry)
    try:
        yield
    finally:
        _IN_PROCESS.remove(entry)


def in_process_key() -> tuple[int, ...]:
    """Identifies the in-process plugins now registered (for caches keyed on plugin options)."""
    return tuple(id(p) for _, p in _IN_PROCESS)


def blocked_from(options: Iterable[str]) -> tuple[set[str], list[str]]:
    """Split ``-p`` values and ``FTP_DISABLE_PLUGINS``/``FTP_PLUGINS`` into (blocked, extra)."""
    blocked = set(_env_list(DISABLE_ENV))
    extra = _env_list(EXTRA_ENV)
    for opt in options:
        if opt.startswith("no:"):
            blocked.add(opt[3:])
        else:
            extra.append(opt)
    return blocked, extra


def allowed_from(only: str | None) -> set[str] | None:
    """The allow-list from ``--only-plugins`` (comma-separated) or else ``FTP_ONLY_PLUGINS``.

    ``--only-plugins ""`` allows no third-party plugin; an empty ``FTP_ONLY_PLUGINS`` counts as
    unset, as empty environment variables usually do.
    """
    text = only if only is not None else (os.environ.get(ONLY_ENV) or None)
    if text is None:
        return None
    return {n.strip() for n in text.split(",") if n.strip()}


def load_plugins(options: Iterable[str] = (), strict: bool = False,
                 only: str | None = None) -> PluginSet:
    """Build the plugin set for a command: entry points, in-process plugins, ``-p`` modules.

    Args:
        options: ``-p`` values: ``no:NAME`` blocks a plugin, anything else loads a module.
        strict: Fail on any plugin error instead of reporting it.
        only: ``--only-plugins`` (comma-separated names); None reads ``FTP_ONLY_PLUGINS``.

    Raises:
        UserError: with ``strict`` when a plugin failed; when the allow-list names a plugin
            that is not installed (a misspelt allow-list would otherwise block silently).

    """
    blocked, extra = blocked_from(options)
    allowed = allowed_from(only)
    plugins = PluginSet(blocked, only=allowed, strict=strict)
    plugins.load_entry_points()
    for name, plugin in list(_IN_PROCESS):
        plugins.add(plugin, name)
    for spec in extra:
        plugins.load_extra(spec)
    if allowed:
        from ftp.suggest import did_you_mean

        known = sorted(plugins.infos)
        for name in sorted(allowed - set(known)):
            raise UserError(f"{ONLY_ENV}/--only-plugins names {name!r}, which is not installed"
                            f"{did_you_mean(name, known)}; installed: {', '.join(known)}")
    if strict:
        plugins.check_strict()
    return plugins
