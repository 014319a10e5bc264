"""A JSON schema of pipeline files, built from the installed plugins' component configs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from ftp.components import StrictConfig
from ftp.config import (
    AdapterSection,
    DataSection,
    EvaluateSection,
    ModelSection,
    PipelineSection,
    StageSection,
)
from ftp.distributed.config import DistributedSection
from ftp.kinds import BY_NAME
from ftp.registry import Registry

REF = "#/$defs/{model}"


def _schema(model: type[BaseModel], defs: dict[str, Any]) -> dict[str, Any]:
    s = model.model_json_schema(ref_template=REF)
    defs.update(s.pop("$defs", {}))
    return s


def _variants(core: type[BaseModel], kind: str, registry: Registry,
              defs: dict[str, Any]) -> dict[str, Any]:
    """One schema per component of ``kind``: the section's own keys plus its options."""
    key = BY_NAME[kind].key
    base = _schema(core, defs)
    variants = []
    for name, entry in sorted(registry.entries[kind].items()):
        props = dict(base.get("properties", {}))
        props[key] = {"const": name, "description": entry.cls.summary()}
        props.update(_schema(entry.cls.Config, defs).get("properties", {}))
        variants.append({
            "type": "object",
            "title": f"{key} = {name!r}",
            "properties": props,
            "additionalProperties": False,
        })
    return {"anyOf": variants} if variants else base


def pipeline_schema(
    registry: Registry, settings: dict[str, type[StrictConfig]] | None = None
) -> dict[str, Any]:
    """Return a JSON schema (draft 2020-12) for pipeline.toml with the installed components.

    Args:
        registry: The installed components.
        settings: Plugin name → its settings class, for the ``[plugins.NAME]`` tables.

    """
    defs: dict[str, Any] = {}
    plugins = {name: {**_schema(cls, defs), "type": "object"}
               for name, cls in sorted((settings or {}).items())}
    model = _variants(ModelSection, "model_provider", registry, defs)
    data = _variants(DataSection, "data_loader", registry, defs)
    stages = _variants(StageSection, "method", registry, defs)
    evaluate = _variants(EvaluateSection, "evaluator", registry, defs)
    distributed = _variants(DistributedSection, "launcher", registry, defs)
    defs["AdapterSection"] = _schema(AdapterSection, defs)
    formats = sorted(registry.entries["format"])
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ftp pipeline file",
        "type": "object",
        "additionalProperties": False,
        "required": ["pipeline", "stages"],
        "properties": {
            "pipeline": _schema(PipelineSection, defs),
            "model": model,
            "data": {"type": "object", "additionalProperties": data,
                     "description": f"Datasets by name. Formats: {', '.join(formats)}"},
            "stages": {"type": "array", "minItems": 1, "items": stages},
            "evaluate": {"type": "array", "items": evaluate},
            "distributed": distributed,
            "plugins": {"type": "object", "properties": plugins, "additionalProperties": False,
                        "description": "Settings of plugins, by plugin name ([plugins.NAME])"},
        },
        "$defs": defs,
    }
