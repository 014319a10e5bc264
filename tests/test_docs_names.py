"""docs/pipeline.md, cli.md, components.md and hooks.md name only things that exist.

Checked: relative links (the file, and the heading an anchor points to), repository paths in
backticks, contrib plugins (``ftp-NAME``), built-in components (``loader = "x"``, ``the `x`
evaluator``, the **`x`** entries of "Built-in components"), hooks (``ftp_*``), and attributes
of the exported base classes (``Method.tokenize_examples``).
"""

import re
from pathlib import Path

import pytest

import ftp
from ftp import hookspecs
from ftp.testing import plugin_set

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CHECKED = ("pipeline.md", "cli.md", "components.md", "hooks.md")

KINDS = {"loader": "data_loader", "format": "format", "method": "method",
         "evaluator": "evaluator", "provider": "model_provider"}
#: "### Data loaders (`loader =`)" and its siblings: the kind of the **`name`** entries below.
SECTION_KINDS = {"Data loaders": "data_loader", "Formats": "format",
                 "Model providers": "model_provider", "Methods": "method",
                 "Evaluators": "evaluator"}
REPO_DIRS = ("examples/", "core/", "plugins/", "contrib/", "tests/", "docs/")

LINK = re.compile(r"\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\n]+)`")
ASSIGNED = re.compile(r'\b(loader|format|method|evaluator|provider)\s*=\s*"([^"]+)"')
NAMED = re.compile(r"`([a-z][a-z0-9_-]*)`(?: and `([a-z][a-z0-9_-]*)`)? "
                   r"(loader|format|method|evaluator|provider|hook)s?\b")
HOOK = re.compile(r"\bftp_[a-z_]+\b")
CONTRIB = re.compile(r"(?<![\w/.-])ftp-([a-z][a-z0-9]*(?:-[a-z0-9]+)*)(?![\w.\[/-])")
ATTRIBUTE = re.compile(r"\b(Method|Format|Evaluator|DataLoader|ModelProvider|TrainContext|"
                       r"EvalContext|LoadContext|Component)\.([a-z_]+)\b")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def problems(text: str, where: Path) -> list[str]:
    """What ``text`` (a page in ``where``'s folder) names that does not exist."""
    registry = plugin_set().registry
    hooks = {n for n in dir(hookspecs) if n.startswith("ftp_")}
    packages = {p.name for p in ROOT.glob("plugins/ftp_*")} | {
        p.name for p in ROOT.glob("contrib/*/src/ftp_*")}
    out = []

    def component(kind: str, name: str, how: str) -> None:
        if registry.find(kind, name) is None:
            out.append(f"{how}: no {kind} {name!r} among the built-in components")

    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # a URL
        file, _, anchor = target.partition("#")
        path = (where.parent / file).resolve() if file else where
        if not path.exists():
            out.append(f"link {target}: no file {path.relative_to(ROOT)}")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            out.append(f"link {target}: no heading #{anchor} in {path.name}")
    for code in CODE.findall(text):
        if code.startswith(REPO_DIRS) and not re.search(r"[*A-Z]", code) \
                and not (ROOT / code).exists():
            out.append(f"`{code}`: no such path in the repository")
    for kind, name in ASSIGNED.findall(text):
        if kind == "format" and name in ("json", "jsonl"):
            continue
        component(KINDS[kind], name, f'{kind} = "{name}"')
    for first, second, kind in NAMED.findall(text):
        for name in filter(None, (first, second)):
            if kind == "hook":
                if name not in hooks:
                    out.append(f"`{name}` hook: no such hook")
            else:
                component(KINDS[kind], name, f"the `{name}` {kind}")
    # A page may define a hook as an example of adding one (components.md: a new kind).
    defined = set(re.findall(r"^def (ftp_[a-z_]+)\(", text, re.M))
    for name in set(HOOK.findall(text)) - packages - defined:
        if name not in hooks:
            out.append(f"{name}: neither a hook nor a plugin package")
    for name in set(CONTRIB.findall(text)):
        if not (ROOT / "contrib" / f"ftp-{name}").is_dir():
            out.append(f"ftp-{name}: no such plugin in contrib/")
    for cls, attr in set(ATTRIBUTE.findall(text)):
        base = getattr(ftp, cls)
        if not hasattr(base, attr) and attr not in getattr(base, "__dataclass_fields__", {}):
            out.append(f"{cls}.{attr}: no such attribute")
    kind = None
    for line in text.splitlines():
        heading = re.match(r"^### (.+?) \(", line)
        if line.startswith("## "):
            kind = None
        elif heading:
            kind = SECTION_KINDS.get(heading.group(1))
        entry = re.match(r"^\*\*`([a-z0-9_-]+)`\*\*", line)
        if entry and kind:
            component(kind, entry.group(1), f"**`{entry.group(1)}`**")
    return out


@pytest.mark.parametrize("page", CHECKED)
def test_the_page_names_only_what_exists(page):
    path = DOCS / page
    assert problems(path.read_text(encoding="utf-8"), path) == []


def test_stale_names_are_caught():
    """What the pages once said, and would be caught saying again."""
    stale = """
The contrib plugin `ftp-example` adds the `lines` loader for plain-text files; see
[contrib/ftp-example](../contrib/ftp-example/README.md).
See `Method.tokenize_examples` in [writing-plugins.md](writing-plugins.md#tokenizing-records),
`examples/missing.toml`, the `ftp_data_loaded` hook and `ftp_before_save`.

### Formats (`format =`, options in `format_options`)

**`openai`** — no such format.
"""
    found = problems(stale, DOCS / "pipeline.md")
    assert sorted(found) == sorted([
        "link ../contrib/ftp-example/README.md: no file contrib/ftp-example/README.md",
        "link writing-plugins.md#tokenizing-records: no heading #tokenizing-records in "
        "writing-plugins.md",
        "`examples/missing.toml`: no such path in the repository",
        "the `lines` loader: no data_loader 'lines' among the built-in components",
        "`ftp_data_loaded` hook: no such hook",
        "ftp_before_save: neither a hook nor a plugin package",
        "ftp_data_loaded: neither a hook nor a plugin package",
        "ftp-example: no such plugin in contrib/",
        "**`openai`**: no format 'openai' among the built-in components",
    ])
