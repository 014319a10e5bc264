"""Finding lm-evaluation-harness tasks: local task folders first, lm_eval's own tasks after.

A task folder holds lm_eval task YAML files (any depth) and the local data files they read.
lm_eval hands a relative ``dataset_kwargs.data_files`` to the datasets library, which
resolves it against the working directory; here it is resolved against the YAML file's
folder instead, so a task folder works wherever ftp is run from.

lm_eval's built-in task index (about 15,000 entries) takes seconds to build, so it is built
only when a requested name is not found in the local folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftp import UserError

#: The folder of task definitions shipped with this plugin (``sst2_zeroshot``).
BUNDLED_TASKS = Path(__file__).parent / "task_definitions"


def check_task_dirs(dirs: list[Path]) -> None:
    """Raise `UserError` for a task folder that does not exist or holds no YAML file."""
    for folder in dirs:
        if not folder.is_dir():
            raise UserError(f"lm_eval task folder not found: {folder}")
        if not any(folder.rglob("*.yaml")):
            raise UserError(f"lm_eval task folder {folder} holds no .yaml task definitions")


def load_tasks(names: list[str], dirs: list[Path]) -> tuple[Any, list[Any]]:
    """Return a ``TaskManager`` and the task specs to hand ``simple_evaluate``.

    Args:
        names: Task, group or tag names, as lm_eval knows them.
        dirs: Local task folders, searched after the bundled one; a name defined in a later
            folder wins over an earlier one.

    Returns:
        ``(task_manager, specs)``: for a YAML task in a local folder the spec is its full
        config with relative data files made absolute; any other name is passed as it is.

    Raises:
        UserError: A name that neither the folders nor lm_eval's own tasks define.

    """
    from lm_eval.tasks import TaskManager

    folders = [BUNDLED_TASKS, *dirs]
    manager = TaskManager(include_path=[str(d) for d in folders], include_defaults=False)
    missing = [n for n in names if n not in manager.task_index]
    if missing:
        # Local definitions still win: lm_eval indexes include_path after its own tasks.
        local = manager
        manager = TaskManager(include_path=[str(d) for d in folders], include_defaults=True)
        still = [n for n in names if n not in manager.task_index]
        if still:
            raise UserError(_not_found(still, folders, local))
    return manager, [_spec(manager, name) for name in names]


def _spec(manager: Any, name: str) -> Any:
    from lm_eval.tasks._index import Kind
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = manager.task_index[name]
    if entry.kind is not Kind.TASK or entry.yaml_path is None:
        return name
    yaml_path = Path(entry.yaml_path)
    if _is_builtin(yaml_path):
        return name
    kwargs = dict((entry.cfg or {}).get("dataset_kwargs") or {})
    if not kwargs.get("data_files") and not kwargs.get("data_dir"):
        return name
    # The full config (includes merged, !function resolved), as lm_eval itself would load it.
    cfg = load_yaml(yaml_path, resolve_func=True)
    cfg["dataset_kwargs"] = resolve_data_paths(cfg.get("dataset_kwargs") or {}, yaml_path.parent)
    for path in _local_files(cfg["dataset_kwargs"].get("data_files")):
        if not path.exists():
            raise UserError(f"lm_eval task {name!r} ({yaml_path}): data file not found: {path}")
    return cfg


def resolve_data_paths(kwargs: dict[str, Any], base: Path) -> dict[str, Any]:
    """Return ``dataset_kwargs`` with relative ``data_files`` and ``data_dir`` under ``base``.

    ``data_files`` may be a string, a list, or a mapping of split to either, as the datasets
    library accepts; URLs and absolute paths are left alone.
    """

    def fix(value: Any) -> Any:
        if isinstance(value, str):
            return value if "://" in value or Path(value).is_absolute() else str(base / value)
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        return value

    out = dict(kwargs)
    for key in ("data_files", "data_dir"):
        if out.get(key):
            out[key] = fix(out[key])
    return out


def _local_files(value: Any) -> list[Path]:
    """The plain local paths in a ``data_files`` value (no URLs, no glob patterns)."""
    if isinstance(value, str):
        plain = "://" not in value and not any(c in value for c in "*?[")
        return [Path(value)] if plain else []
    if isinstance(value, list | tuple):
        return [p for v in value for p in _local_files(v)]
    if isinstance(value, dict):
        return [p for v in value.values() for p in _local_files(v)]
    return []


def _is_builtin(path: Path) -> bool:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent in path.resolve().parents


def _not_found(names: list[str], folders: list[Path], local: Any) -> str:
    quoted = ", ".join(repr(n) for n in names)
    known = sorted(local.all_tasks)
    where = ", ".join(str(f) for f in folders)
    msg = (f"lm_eval task {quoted} not found in the task folders ({where}) or among "
           f"lm_eval's own tasks; local tasks: {', '.join(known) or 'none'}")
    # lm_eval's index skips YAML files it cannot read without saying so; say it here.
    indexed = {Path(e.yaml_path).resolve() for e in local.task_index.values() if e.yaml_path}
    skipped = sorted(str(p) for f in folders for p in f.rglob("*.yaml")
                     if p.resolve() not in indexed)
    if skipped:
        msg += f"; YAML files that define no task lm_eval could read: {', '.join(skipped)}"
    return msg
