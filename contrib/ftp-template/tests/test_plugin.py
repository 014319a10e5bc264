"""The plugin as ftp sees it: registration, the command line, and a whole pipeline."""

import json

import ftp_template
from ftp.testing import plugin_set

PIPELINE = """
[pipeline]
name = "qa"

[model]
provider = "template-hf"
path = "{model}"
freeze_layers = 1

[data.qa]
loader = "template-sqlite"
path = "qa.db"
table = "qa"
format = "template-qa"

[[stages]]
name = "train"
method = "template-normtune"
data = "qa"
max_steps = 3
batch_size = 2
logging_steps = 1

[[evaluate]]
evaluator = "template-exact-match"
data = "qa"
split = "train"
before = true
max_new_tokens = 4
"""


def weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_registers_one_component_of_each_kind():
    plugins = plugin_set(ftp_template)
    info = plugins.infos["ftp_template"]
    assert info.status == "ok", info.error
    assert sorted(info.components) == [
        ("data_loader", "template-sqlite"), ("evaluator", "template-exact-match"),
        ("format", "template-qa"), ("method", "template-normtune"),
        ("model_provider", "template-hf"), ("reward", "template-keywords")]


def test_listed_by_ftp_plugins(ftp_plugin, ftp_cli):
    ftp_plugin(ftp_template, name="template")
    result = ftp_cli("plugins", "--json")
    assert result.exit_code == 0, result.output
    listed = {p["name"]: p for p in json.loads(result.stdout)}
    assert listed["template"]["status"] == "ok"
    assert len(listed["template"]["components"]) == 6


def test_options_are_documented(ftp_plugin, ftp_cli):
    ftp_plugin(ftp_template, name="template")
    result = ftp_cli("components", "provider", "--options")
    assert result.exit_code == 0, result.output
    assert "freeze_layers: int = 1  — Freeze this many transformer blocks" in result.stdout


def test_tables_command(ftp_plugin, ftp_cli, qa_db):
    ftp_plugin(ftp_template, name="template")
    result = ftp_cli("template", "tables", str(qa_db))
    assert result.exit_code == 0, result.output
    assert result.stdout == "qa: 6 rows; columns: question, answer, context\n"


def test_a_pipeline_of_every_component(ftp_run, ftp_tiny_model, qa_db):
    run = ftp_run(PIPELINE.format(model=ftp_tiny_model), plugins=[ftp_template])
    assert run.status["status"] == "finished"
    before = run.metrics("base", "template-exact-match")
    after = run.metrics("train", "template-exact-match")
    assert before["rows"] == after["rows"] == 6
    assert 0 <= after["f1"] <= 1
    losses = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").open()]
    # Block 0 is frozen by the provider: block 1's two norms and the final norm, 32 each.
    assert [r["trainable_weights"] for r in losses if r.get("event") == "normtune"] == [96]
    trained, base = weights(run.run_dir / "model"), weights(ftp_tiny_model)
    assert trained["model.embed_tokens.weight"].equal(base["model.embed_tokens.weight"])
    assert trained["model.layers.0.input_layernorm.weight"].equal(
        base["model.layers.0.input_layernorm.weight"])
    assert trained["model.layers.1.mlp.up_proj.weight"].equal(
        base["model.layers.1.mlp.up_proj.weight"])
    assert not trained["model.norm.weight"].equal(base["model.norm.weight"])
    # The lifecycle hook wrote metrics.csv from the finished results.
    csv_lines = (run.run_dir / "metrics.csv").read_text().splitlines()
    assert csv_lines[0] == "stage,evaluation,metric,value"
    assert any(line.startswith("train,template-exact-match,f1,") for line in csv_lines)
