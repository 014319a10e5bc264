"""docs/hooks.md documents every hook in core/ftp/hookspecs.py: arguments, return, when, example."""

import inspect
import re
from pathlib import Path

from ftp import hookspecs

DOC = Path(__file__).resolve().parent.parent / "docs" / "hooks.md"
HEADING = re.compile(r"^### `(ftp_\w+)\(([^)]*)\)`$", re.MULTILINE)


def specs() -> dict[str, list[str]]:
    """Hook name → argument names, from the spec module itself."""
    return {
        name: list(inspect.signature(fn).parameters)
        for name, fn in vars(hookspecs).items()
        if name.startswith("ftp_") and callable(fn)
    }


def sections() -> dict[str, tuple[list[str], str]]:
    """Hook name → (arguments in the heading, the section's text up to the next heading)."""
    text = DOC.read_text(encoding="utf-8")
    found = {}
    matches = list(HEADING.finditer(text))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[m.end():end].split("\n## ")[0]
        args = [a.strip() for a in m.group(2).split(",") if a.strip()]
        found[m.group(1)] = (args, body)
    return found


def test_the_spec_module_has_hooks():
    assert {"ftp_data_loaders", "ftp_cli_commands", "ftp_pipeline_error"} <= set(specs())


def test_every_hook_has_a_section_and_no_section_names_a_missing_hook():
    documented, specified = set(sections()), set(specs())
    assert specified - documented == set(), "hooks without a ### `name(args)` section"
    assert documented - specified == set(), "sections for hooks that do not exist"


def test_each_section_gives_arguments_return_when_and_an_example():
    found = sections()
    for name, args in specs().items():
        heading_args, body = found[name]
        assert heading_args == args, f"{name}: heading says {heading_args}, spec has {args}"
        for arg in args:
            assert f"| `{arg}` |" in body, f"{name}: argument {arg!r} not in its table"
        assert "**Returns:**" in body, name
        assert "**When called:**" in body, name
        example = re.search(r"```python\n(.*?)```", body, re.DOTALL)
        assert example and f"def {name}(" in example.group(1), f"{name}: no example"
        assert "@hookimpl" in example.group(1), name


def test_documented_examples_are_valid_implementations():
    """Each example registers with pluggy against the real specs (argument names checked)."""
    import pluggy

    for name, (_, body) in sections().items():
        code = re.search(r"```python\n(.*?)```", body, re.DOTALL).group(1)
        namespace = {"hookimpl": hookspecs.hookimpl}
        exec(compile(code, f"hooks.md:{name}", "exec"), namespace)  # defines functions only
        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        plugin = type("Example", (), {name: staticmethod(namespace[name])})
        pm.register(plugin)  # raises if the example takes an argument the spec lacks
        assert pm.hook.__dict__[name].get_hookimpls()
