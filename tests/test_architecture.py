"""The shape of the core: no import cycles, no private names reached across modules."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "core"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node, except inside ``if TYPE_CHECKING:`` (imports there never run)."""
    nodes: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo += node.orelse
            continue
        todo += ast.iter_child_nodes(node)
    return nodes


def imports(path: Path, known: set[str]) -> list[tuple[str, str | None]]:
    """(module, name) of each ftp import run in ``path``, at any depth; None for ``import x``.

    ``from ftp.cli import run`` where ``ftp.cli.run`` is a module counts as importing it.
    """
    found: list[tuple[str, str | None]] = []
    for node in runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.append((full, None) if full in known else (node.module, alias.name))
        elif isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
    return [(m, n) for m, n in found if m in known]


def graph(root: Path) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    known = set(files)
    return {m: {t for t, _ in imports(p, known) if t != m} for m, p in files.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_core_has_no_import_cycle() -> None:
    # Function-level imports count too: a lazy import only hides a cycle until it runs.
    edges = graph(CORE)
    assert "ftp.cli.run" in edges and "ftp.config" in edges  # the walk found the core
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_private_name_is_imported_across_modules() -> None:
    files = {module_name(p, CORE): p for p in CORE.rglob("*.py")}
    plugins = ROOT / "plugins"
    files |= {module_name(p, plugins): p for p in plugins.rglob("*.py")}
    known = set(files)
    reached = [f"{m}: {target}.{name}" for m, p in sorted(files.items())
               for target, name in imports(p, known)
               if (name and name.startswith("_") and name != "__version__")
               or any(part.startswith("_") and part != "__init__" for part in target.split("."))]
    assert not reached, reached


def test_the_command_line_is_on_top() -> None:
    # Libraries (ftp.datacheck, ftp.runner, ...) never reach up into the command line; only
    # the entry points and the test helpers that run it do.
    edges = graph(CORE)
    callers = {m for m, targets in edges.items() if any(t.startswith("ftp.cli") for t in targets)}
    assert {m for m in callers if not m.startswith("ftp.cli")} == {"ftp.__main__", "ftp.testing"}


def test_tests_run_the_ftp_command_through_one_helper() -> None:
    # ftp.testing.run_ftp is the one way to run `python -m ftp` in a subprocess; copies drift.
    # Two tests start it themselves, for what a finished run cannot give them: the
    # interpreter's own flags (-X importtime), and a live process to signal.
    own = {"test_lazy_imports.py", "test_resume.py"}
    call = '"-m", ' + '"ftp"'  # split, so that this file does not match itself
    suites = [ROOT / "tests", *sorted((ROOT / "contrib").glob("*/tests"))]
    copies = [str(p.relative_to(ROOT)) for suite in suites for p in sorted(suite.glob("*.py"))
              if call in p.read_text(encoding="utf-8") and p.name not in own]
    assert copies == []
    assert call in (CORE / "ftp" / "testing.py").read_text(encoding="utf-8")
