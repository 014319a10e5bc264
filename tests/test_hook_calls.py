"""Hooks are called by pluggy: wrappers work, one plugin's failure stays its own, tracing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ftp import hookimpl
from ftp.errors import RunError
from ftp.plugins import PluginSet
from ftp.testing import plugin_set

CALLS: list[str] = []


class First:
    """Registered first; observes the finish and returns a value."""

    @staticmethod
    @hookimpl
    def ftp_trainer_callbacks(stage: str) -> list[Any]:
        CALLS.append(f"first {stage}")
        return ["from-first"]


class Raiser:
    """Registered second; raises."""

    @staticmethod
    @hookimpl
    def ftp_trainer_callbacks(stage: str) -> list[Any]:
        CALLS.append(f"raiser {stage}")
        raise ValueError("observer broke")


class Last:
    """Registered last; returns a value."""

    @staticmethod
    @hookimpl
    def ftp_trainer_callbacks(stage: str) -> list[Any]:
        CALLS.append(f"last {stage}")
        return ["from-last"]


class OldStyleWrapper:
    """A ``hookwrapper=True`` implementation: sees the outcome of the others."""

    @staticmethod
    @hookimpl(hookwrapper=True)
    def ftp_trainer_callbacks(stage: str) -> Iterator[None]:
        CALLS.append("old-wrapper before")
        outcome = yield
        CALLS.append(f"old-wrapper after {outcome.get_result()}")


class RaisingWrapper:
    """A new-style wrapper that raises after the others ran."""

    @staticmethod
    @hookimpl(wrapper=True)
    def ftp_trainer_callbacks(stage: str) -> Iterator[None]:
        result = yield
        CALLS.append(f"raising-wrapper saw {result}")
        raise RuntimeError("wrapper broke")


@pytest.fixture(autouse=True)
def _calls() -> None:
    CALLS.clear()


def test_an_old_style_wrapper_runs_around_every_implementation() -> None:
    ps = plugin_set(First, OldStyleWrapper, Last, builtins=False)
    assert ps.call("ftp_trainer_callbacks", stage="s") == [["from-first"], ["from-last"]]
    assert CALLS[0] == "old-wrapper before"
    assert CALLS[-1] == "old-wrapper after [['from-last'], ['from-first']]"
    assert sorted(CALLS[1:-1]) == ["first s", "last s"]


def test_a_raising_implementation_fails_alone(capsys: pytest.CaptureFixture[str]) -> None:
    ps = plugin_set(First, Raiser, Last, builtins=False)
    # Every plugin ran, whichever pluggy called first; the results keep registration order.
    assert ps.call("ftp_trainer_callbacks", stage="s") == [["from-first"], ["from-last"]]
    assert sorted(CALLS) == ["first s", "last s", "raiser s"]
    assert [str(f) for f in ps.hook_failures] == [
        "plugin 'Raiser' failed in ftp_trainer_callbacks: ValueError: observer broke"]
    assert "warning: plugin 'Raiser' failed in ftp_trainer_callbacks" in capsys.readouterr().err


def test_strict_makes_a_raising_implementation_fail_the_call() -> None:
    ps = plugin_set(First, Raiser, builtins=False)
    ps.strict = True
    with pytest.raises(RunError, match=r"plugin 'Raiser' failed in ftp_trainer_callbacks: "
                                       r"ValueError: observer broke \(--strict-plugins\)"):
        ps.call("ftp_trainer_callbacks", stage="s")


def test_a_raising_wrapper_is_reported_naming_its_plugin() -> None:
    ps = plugin_set(First, RaisingWrapper, builtins=False)
    assert ps.call("ftp_trainer_callbacks", stage="s") == []
    assert CALLS == ["first s", "raising-wrapper saw [['from-first']]"]
    assert [str(f) for f in ps.hook_failures] == [
        "plugin 'RaisingWrapper' failed in ftp_trainer_callbacks: RuntimeError: wrapper broke"]


def test_tracing_is_one_line_per_implementation_with_its_own_outcome(tmp_path: Path) -> None:
    lines: list[str] = []
    ps = PluginSet(trace=True, report=lines.append)
    for plugin in (First, Raiser):
        ps.add(plugin, plugin.__name__)
    lines.clear()
    ps.call("ftp_trainer_callbacks", stage="s")
    traced = [line.split() for line in lines if line.startswith("ftp trace: ")]
    assert sorted((t[2], t[3], t[5:] == ["ok"]) for t in traced) == [
        ("ftp_trainer_callbacks", "plugin=First", True),
        ("ftp_trainer_callbacks", "plugin=Raiser", False)]
    raised = next(t for t in traced if t[3] == "plugin=Raiser")
    assert raised[4].endswith("ms") and raised[5:] == ["raised", "ValueError"]
