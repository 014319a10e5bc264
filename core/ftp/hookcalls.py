"""How pluggy calls ftp's hooks: each plugin's lifecycle hooks isolated, calls traced.

pluggy calls every hook (wrappers included, as pluggy documents them); two things are added
around it, without a loop of ftp's own over the implementations:

- **Isolation.** pluggy stops a hook call at the first exception, but an observer must not
  break the run it observes. So a plugin is registered as a `Guarded` copy whose lifecycle
  hook implementations catch their own exceptions and report them as a `HookFailure`; the
  other plugins' implementations still run. Wrappers are left as they are, so that they see
  the call exactly as pluggy makes it.
- **Tracing.** `Tracer` is installed with ``pm.add_hookcall_monitoring`` and prints one line
  per implementation of each call: hook, plugin, duration and outcome.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pluggy


@dataclass(frozen=True)
class HookFailure:
    """A lifecycle hook implementation that raised; the run went on without it."""

    plugin: str
    hook: str
    error: str

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} failed in {self.hook}: {self.error}"


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``: how a plugin's exception is reported."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


#: What an isolated implementation calls when it raised: (plugin, hook, exception).
OnFailure = Callable[[str, str, Exception], None]


class Guarded:
    """A plugin as pluggy sees it: the same hook implementations, lifecycle ones isolated.

    Args:
        plugin: The plugin object (module, class or instance).
        name: The plugin's name.
        pm: The plugin manager (its markers decide what is a hook implementation).
        unguarded: Hooks whose implementations are left to raise: the registration hooks,
            whose failure fails the plugin as a whole.
        on_failure: Called instead of raising when a guarded implementation raises; it may
            raise itself (``--strict-plugins``).
        timings: Where a guarded implementation records its own duration and outcome for
            the tracer, keyed by (hook, plugin); None when not tracing.

    """

    def __init__(self, plugin: object, name: str, pm: pluggy.PluginManager,
                 unguarded: set[str], on_failure: OnFailure,
                 timings: dict[tuple[str, str], tuple[float, str]] | None) -> None:
        self.plugin = plugin
        for attr in dir(plugin):
            opts = pm.parse_hookimpl_opts(plugin, attr)
            if opts is None:
                continue
            function = getattr(plugin, attr)
            if attr not in unguarded and not (opts["wrapper"] or opts["hookwrapper"]):
                function = _isolated(function, name, attr, on_failure, timings)
            setattr(self, attr, function)

    def __repr__(self) -> str:
        return repr(self.plugin)


def _isolated(function: Callable[..., Any], plugin: str, hook: str, on_failure: OnFailure,
              timings: dict[tuple[str, str], tuple[float, str]] | None) -> Callable[..., Any]:
    # functools.wraps keeps the marker and, through __wrapped__, the argument names pluggy
    # passes.
    @functools.wraps(function)
    def isolated(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        outcome = "ok"
        try:
            return function(*args, **kwargs)
        except Exception as exc:
            outcome = f"raised {type(exc).__name__}"
            on_failure(plugin, hook, exc)
            return None
        finally:
            if timings is not None:
                timings[(hook, plugin)] = ((time.perf_counter() - start) * 1000, outcome)

    return isolated


class Tracer:
    """``FTP_TRACE_HOOKS``: pluggy's hook-call monitoring, one line per implementation.

    An isolated implementation times itself (its line shows its own duration and whether it
    raised); any other — a registration hook, which is called one plugin at a time, or a
    wrapper — shows the duration and outcome of the whole call.

    Args:
        report: Where each line goes.

    """

    def __init__(self, report: Callable[[str], None]) -> None:
        self.report = report
        self.timings: dict[tuple[str, str], tuple[float, str]] = {}
        self._started: list[float] = []

    def install(self, pm: pluggy.PluginManager) -> None:
        """Start tracing every hook call of ``pm``."""
        pm.add_hookcall_monitoring(self.before, self.after)

    def before(self, hook_name: str, hook_impls: Sequence[pluggy.HookImpl],
               kwargs: Mapping[str, Any]) -> None:
        """Note when the call started (calls can nest: a hook may call another)."""
        self._started.append(time.perf_counter())

    def after(self, outcome: pluggy.Result[Any], hook_name: str,
              hook_impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
        """Print one line per implementation, in the order pluggy called them."""
        ms = (time.perf_counter() - self._started.pop()) * 1000
        exc = outcome.exception
        whole = "ok" if exc is None else f"raised {type(exc).__name__}"
        for impl in reversed(hook_impls):
            own_ms, own = self.timings.pop((hook_name, impl.plugin_name), (ms, whole))
            self.report(f"ftp trace: {hook_name} plugin={impl.plugin_name} "
                        f"{own_ms:.2f}ms {own}")
