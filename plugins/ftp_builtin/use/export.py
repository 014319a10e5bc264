"""``ftp export``: a run's (or any model's) weights as GGUF, an Ollama model, or safetensors.

Every GGUF written is checked against the transformers model in llama.cpp (`parity`); drift
fails the export. Files already there are kept unless ``--overwrite``; each export is recorded
in ``export.json`` (the run folder's, or the output folder's for a model that is not a run).
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from ftp import RunError, UserError
from ftp_builtin.use.source import Source

FORMATS = ("gguf", "ollama", "safetensors")
TORCH_DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


def default_dtype(fmt: str) -> str:
    """f16 for GGUF and Ollama (llama.cpp's usual), f32 for safetensors (as trained)."""
    return "f32" if fmt == "safetensors" else "f16"


def targets(source: Source, fmt: str, dtype: str, out: Path) -> list[Path]:
    """The files or folders an export writes."""
    stem = f"{source.name}-{dtype}"
    if fmt == "gguf":
        return [out / f"{stem}.gguf"]
    if fmt == "ollama":
        return [out / "ollama" / f"{stem}.gguf", out / "ollama" / "Modelfile"]
    return [out / stem]


def export(source: Source, fmt: str, dtype: str, out: Path, overwrite: bool,
           parity: bool = True) -> dict[str, Any]:
    """Write one export and record it; return the record.

    Raises:
        UserError: a bad format/dtype pair, a file in the way, an unsupported model.
        RunError: parity drift, naming the first difference.

    """
    from ftp_builtin.use import gguf_file

    if source.is_gguf:
        raise UserError("export reads transformers models (a run, a model folder or a name); "
                        f"{source.model} is already a GGUF file")
    if fmt == "safetensors" and dtype not in TORCH_DTYPES:
        raise UserError(f"--dtype {dtype} is for GGUF; safetensors takes "
                        f"{', '.join(TORCH_DTYPES)}")
    paths = targets(source, fmt, dtype, out)
    taken = [p for p in paths if p.exists()]
    if taken and not overwrite:
        raise UserError(f"{taken[0]} exists; pass --overwrite to replace it")
    if fmt == "safetensors" and taken and not (paths[0] / "config.json").is_file():
        raise UserError(f"{paths[0]} exists and is not a model folder: not replacing it")
    started = time.perf_counter()
    from ftp_builtin.use.source import load

    model, tokenizer = load(source)
    if fmt != "safetensors":
        gguf_file.check_architecture(model.config)
    record: dict[str, Any] = {"format": fmt, "dtype": dtype, "source": str(source.model),
                              "files": [str(p) for p in paths],
                              "at": datetime.now(UTC).isoformat(timespec="seconds")}
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        _write_safetensors(model, tokenizer, dtype, paths[0])
    else:
        if fmt == "ollama":
            modelfile_text = _modelfile(source, tokenizer, model, paths[0].name)
        gguf_file.write_gguf(model, tokenizer, paths[0], dtype, source.name)
        click.echo(f"wrote {paths[0]} ({paths[0].stat().st_size / 2**20:.1f} MiB)", err=True)
        if fmt == "ollama":
            paths[1].write_text(modelfile_text, encoding="utf-8")
            click.echo(f"wrote {paths[1]}", err=True)
        try:
            record["parity"] = _parity(paths[0], model, tokenizer, dtype, source, parity)
        except RunError as exc:
            # The files stay for inspection; export.json says they drifted.
            record["parity"] = {"checked": True, "failed": str(exc)}
            record["seconds"] = round(time.perf_counter() - started, 2)
            _record(source, out, record)
            raise
    record["seconds"] = round(time.perf_counter() - started, 2)
    _record(source, out, record)
    return record


def _write_safetensors(model: Any, tokenizer: Any, dtype: str, folder: Path) -> None:
    """The merged model in ``dtype`` with its tokenizer, replacing ``folder`` only when done."""
    import torch

    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.to(getattr(torch, TORCH_DTYPES[dtype])).save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    if folder.exists():
        shutil.rmtree(folder)  # --overwrite was given (checked by the caller)
    tmp.rename(folder)
    click.echo(f"wrote {folder}", err=True)


def _modelfile(source: Source, tokenizer: Any, model: Any, gguf_name: str) -> str:
    from ftp_builtin.use import ollama
    from ftp_builtin.use.gguf_file import end_of_turn_ids

    template, default = ollama.translate(tokenizer)
    ollama.verify(tokenizer, template, default)
    stops = [tokenizer.convert_ids_to_tokens(i)
             for i in end_of_turn_ids(tokenizer, model.generation_config)]
    return ollama.modelfile(gguf_name, template, stops, source.system_prompt() or default)


def _parity(path: Path, model: Any, tokenizer: Any, dtype: str, source: Source,
            wanted: bool) -> dict[str, Any]:
    from ftp_builtin.use import llamacpp, parity

    if not wanted:
        return {"checked": False, "why": "--no-parity"}
    if not llamacpp.available():
        click.echo(f"warning: parity not checked: {llamacpp.INSTALL_HINT}", err=True)
        return {"checked": False, "why": "llama-cpp-python is not installed"}
    conversations = list(parity.CONVERSATIONS)
    system = source.system_prompt()
    if system:
        conversations.append([{"role": "system", "content": system},
                              {"role": "user", "content": "Who are you?"}])
    found = parity.check(path, model, tokenizer, dtype, conversations)
    for note in found.notes:
        click.echo(f"parity note: {note}", err=True)
    click.echo(f"parity with transformers in llama.cpp: {found.record['summary']}", err=True)
    return {"checked": True, **found.record}


def _record(source: Source, out: Path, record: dict[str, Any]) -> None:
    """Append ``record`` to export.json (the run folder's, else the output folder's)."""
    path = (source.run_dir or out) / "export.json"
    try:
        done = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    except ValueError:
        done = []
    if not isinstance(done, list):
        done = []
    done.append(record)
    path.write_text(json.dumps(done, indent=2) + "\n", encoding="utf-8")
