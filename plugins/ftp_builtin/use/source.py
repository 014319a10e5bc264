"""What ``ftp chat`` and ``ftp export`` were pointed at: a run, a model folder, a name, a GGUF.

A run folder's final model is ``model/`` (LoRA already merged), a stage's is
``stages/NAME/model``; a catalog name or Hub id goes through the ``hf`` provider, as in a
pipeline; a folder holding only a LoRA adapter is merged into its base when loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftp import RunError, UserError


@dataclass(frozen=True)
class Source:
    """A resolved model.

    Attributes:
        model: A model folder, a ``.gguf`` file, or a Hub id.
        name: A short name for files written from it.
        run_dir: The run folder it came from, if any.

    """

    model: Path | str
    name: str
    run_dir: Path | None = None

    @property
    def is_gguf(self) -> bool:
        """Whether the model is a GGUF file (read through llama.cpp)."""
        return str(self.model).endswith(".gguf")

    def system_prompt(self) -> str | None:
        """The fixed system prompt the run trained with, if it used one."""
        if self.run_dir is None:
            return None
        try:
            resolved = json.loads((self.run_dir / "resolved.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        found = [d.get("format_options", d).get("system_prompt")
                 for d in (resolved.get("data") or {}).values() if isinstance(d, dict)]
        prompts = {p for p in found if p}
        return prompts.pop() if len(prompts) == 1 else None


def resolve(target: str, stage: str | None = None) -> Source:
    """Find the model ``target`` names.

    Raises:
        UserError: a run folder without that model, ``--stage`` outside a run, a missing path.

    """
    path = Path(target).expanduser()
    if path.is_dir() and (path / "run.json").is_file():
        model = path / "stages" / stage / "model" if stage else path / "model"
        if not (model / "config.json").is_file():
            state = _run_state(path)
            what = f"stage {stage!r}'s model" if stage else "a final model"
            raise UserError(f"{path} has no {what} ({model} is missing; the run is {state})")
        return Source(model, path.resolve().name + (f"-{stage}" if stage else ""), path)
    if stage:
        raise UserError(f"--stage needs a run folder; {target} is not one (no run.json)")
    if target.endswith(".gguf"):
        if not path.is_file():
            raise UserError(f"GGUF file not found: {path}")
        return Source(path, path.stem)
    if path.is_dir():
        if not ((path / "config.json").is_file() or (path / "adapter_config.json").is_file()):
            raise UserError(f"{path} is not a run folder (no run.json) nor a model folder "
                            "(no config.json)")
        return Source(path, path.resolve().name)
    from ftp_builtin.models import HFProvider

    problem = None if path.exists() else _missing(target)
    if problem:
        raise UserError(problem)
    provider = HFProvider(HFProvider.Config.model_validate({"path": target}))
    return Source(provider.source(), target.rsplit("/", 1)[-1])


def _missing(target: str) -> str | None:
    if target.startswith((".", "/", "~")) or target.count("/") > 1:
        return f"no run folder, model folder or GGUF file at {target}"
    return None


def _run_state(run_dir: Path) -> str:
    try:
        return str(json.loads((run_dir / "run.json").read_text(encoding="utf-8"))["status"])
    except (OSError, ValueError, KeyError):
        return "of unknown state"


def load(source: Source, dtype: Any = None) -> tuple[Any, Any]:
    """Load a transformers model (a LoRA adapter merged into its base) and its tokenizer.

    Raises:
        UserError: when the folder or name cannot be loaded.

    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftp.training import use_all_cores

    use_all_cores()
    where = source.model
    dtype = dtype or torch.float32
    try:
        if isinstance(where, Path) and (where / "adapter_config.json").is_file() \
                and not (where / "config.json").is_file():
            from peft import AutoPeftModelForCausalLM

            model = AutoPeftModelForCausalLM.from_pretrained(str(where), dtype=dtype)
            model = model.merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(str(where), dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(str(where))
    except (OSError, ValueError) as exc:
        raise UserError(f"could not load the model at {where}: {str(exc).splitlines()[0]}") \
            from None
    if not tokenizer.chat_template:
        raise RunError(f"the tokenizer at {where} has no chat template")
    model.eval()
    return model, tokenizer
