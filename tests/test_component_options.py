"""`ftp components KIND --options`: every option of every component, with type, default and text."""

import json

import pytest

from ftp.kinds import label
from ftp.testing import plugin_set, run_cli

KINDS = {"loader": "data_loader", "format": "format", "provider": "model_provider",
         "method": "method", "evaluator": "evaluator"}


def components(kind: str) -> list[dict]:
    # --only-plugins "": ftp's built-ins only, whatever else is installed.
    result = run_cli("--only-plugins", "", "components", kind, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_option_of_every_builtin_is_listed_with_type_default_and_description(kind):
    listed = components(kind)
    registry = plugin_set().registry
    assert sorted(c["name"] for c in listed) == registry.names(KINDS[kind])
    for comp in listed:
        fields = registry.find(KINDS[kind], comp["name"]).cls.Config.model_fields
        assert [o["name"] for o in comp["options"]] == list(fields), comp["name"]
        for opt in comp["options"]:
            where = f"{kind} {comp['name']}: option {opt['name']}"
            assert opt["type"], where
            assert opt["description"], f"{where} has no description"
            assert opt["required"] == fields[opt["name"]].is_required(), where


@pytest.mark.parametrize("kind", list(KINDS))
def test_text_listing_shows_one_line_per_option(kind):
    result = run_cli("--only-plugins", "", "components", kind, "--options")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"{label(KINDS[kind])}s:"
    for comp in components(kind):
        for opt in comp["options"]:
            default = "" if opt["required"] else f" = {opt['default']!r}"
            line = f"      {opt['name']}: {opt['type']}{default}  — {opt['description']}"
            assert line in lines, line


def test_an_example_line():
    result = run_cli("--only-plugins", "", "components", "method", "--options")
    assert "      scheduler: 'linear' | 'cosine' | 'constant' | 'constant_with_warmup' = " \
           "'linear'  — Learning-rate schedule after warmup [lr_scheduler_type]." in result.stdout
