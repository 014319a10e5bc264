"""The table of component kinds is the one source: hooks, base classes, CLI, registry, schema."""

from __future__ import annotations

import inspect

from ftp import components, hookspecs
from ftp.kinds import KINDS, kind_named
from ftp.plugins import REGISTRATION_HOOKS, SETTINGS_HOOK
from ftp.testing import plugin_set, run_cli


def test_each_kind_has_a_hook_spec_and_a_base_class_that_agree() -> None:
    for kind in KINDS:
        spec = getattr(hookspecs, kind.hook)
        assert inspect.signature(spec).parameters == {}, kind.hook
        assert kind.base.__name__ in str(inspect.signature(spec).return_annotation), kind.hook
        assert issubclass(kind.base, components.Component) and kind.base.kind == kind.name


def test_every_component_hook_spec_is_a_kind() -> None:
    # A spec returning component classes that no kind names would never be called.
    returns_classes = {name for name, fn in vars(hookspecs).items()
                       if name.startswith("ftp_") and callable(fn)
                       and str(inspect.signature(fn).return_annotation).startswith("list[type[")}
    assert returns_classes == {kind.hook for kind in KINDS}
    assert returns_classes | {SETTINGS_HOOK} == REGISTRATION_HOOKS


def test_the_command_line_accepts_every_spelling_of_every_kind() -> None:
    assert kind_named("loader") is kind_named("data-loader") is kind_named("data_loader")
    assert kind_named("providers") is kind_named("model_provider")
    assert kind_named("rewards") is kind_named("reward")
    for kind in KINDS:
        result = run_cli("components", kind.key)
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines()[0] == f"{kind.label}s:"


def test_an_unknown_kind_names_the_kinds_from_the_table() -> None:
    result = run_cli("components", "evaluatr")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: unknown kind 'evaluatr' (did you mean 'evaluator'?); kinds: "
        + ", ".join(k.key for k in KINDS))


def test_the_registry_has_a_slot_per_kind() -> None:
    assert set(plugin_set().registry.entries) == {kind.name for kind in KINDS}
