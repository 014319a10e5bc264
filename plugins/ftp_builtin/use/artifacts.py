"""Exports a pipeline asks for: ``[plugins.export] artifacts = [{ target = "ollama" }]``.

When the run has finished (model saved, evaluations done), each artifact is written into the
run's ``export/`` folder exactly as ``ftp export RUN_DIR --format TARGET --dtype DTYPE`` would
write it, GGUF parity check included, and recorded in ``export.json``. A failing export is
reported as this plugin's hook failure; the trained model is already saved either way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import click
from pydantic import Field, model_validator

from ftp import StrictConfig, hookimpl


class Artifact(StrictConfig):
    """One export of the run's final model."""

    target: Literal["gguf", "ollama", "safetensors"] = Field(
        description="gguf, ollama (GGUF + Modelfile) or safetensors.")
    dtype: Literal["f32", "f16", "bf16", "q8_0"] | None = Field(
        None, description="Weights (q8_0: GGUF only). Default f16 for GGUF/Ollama, f32 for "
        "safetensors.")

    @model_validator(mode="after")
    def _dtype_fits(self) -> Artifact:
        if self.target == "safetensors" and self.dtype == "q8_0":
            raise ValueError("q8_0 is a GGUF type; safetensors takes f32, f16 or bf16")
        return self


class ExportSettings(StrictConfig):
    """What a finished run exports (``[plugins.export]``)."""

    artifacts: list[Artifact] = Field(
        default_factory=list, description="Exports written into RUN_DIR/export when the run "
        "finishes, e.g. [{ target = \"ollama\", dtype = \"q8_0\" }].")


@hookimpl
def ftp_plugin_settings() -> type[StrictConfig]:
    """Declare ``[plugins.export]``."""
    return ExportSettings


@hookimpl
def ftp_pipeline_finish(run_dir: Path, results: dict[str, Any]) -> None:
    """Write the artifacts the pipeline asked for (read back from the run's resolved.json)."""
    resolved = json.loads((run_dir / "resolved.json").read_text(encoding="utf-8"))
    wanted = (resolved.get("plugins", {}).get("export") or {}).get("artifacts") or []
    if not wanted:
        return
    from ftp_builtin.use import export as exporting
    from ftp_builtin.use.source import resolve

    source = resolve(str(run_dir))
    for item in wanted:
        fmt = item["target"]
        dtype = item.get("dtype") or exporting.default_dtype(fmt)
        click.echo(f"export: {fmt} {dtype}", err=True)
        exporting.export(source, fmt, dtype, run_dir / "export", overwrite=True)
