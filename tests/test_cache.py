"""The tokenized-data cache: reused when nothing changed, rebuilt when any key changes.

Real tokenization (SFT's, through its cache wrapper) on the tiny model's ChatML tokenizer.
"""

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftp import TrainContext
from ftp.cache import CacheKey, entries, lookup, make_key, store
from ftp.cli import cli
from ftp.testing import write_pipeline
from ftp_builtin.methods.sft import SFT
from ftp_builtin.tokenize import tokenize_records

RECORDS = [
    {"messages": [{"role": "user", "content": "Name a colour."},
                  {"role": "assistant", "content": "Blue."}]},
    {"messages": [{"role": "user", "content": "And a fruit?"},
                  {"role": "assistant", "content": "A pear."},
                  {"role": "user", "content": "Another?"},
                  {"role": "assistant", "content": "A plum."}]},
]


def load_tokenizer(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def tokenize(tokenizer, records=RECORDS, **options):
    """SFT's training tokenization; returns (rows, whether they came from the cache)."""
    ctx = TrainContext(stage="sft", model=None, tokenizer=tokenizer, provider=None,
                       train=records, eval=None, adapter=None, output_dir=Path("."), seed=0)
    result, cached = SFT(SFT.Config(**options))._tokenize(ctx, "train", records)
    return result.rows, cached


def test_unchanged_data_is_reused_with_the_same_tokens(tiny_model, capsys):
    tok = load_tokenizer(tiny_model)
    rows, cached = tokenize(tok)
    assert not cached
    assert "tokenized train: 2 rows in" in capsys.readouterr().out
    again, cached = tokenize(tok)
    assert cached
    assert "tokenized train: cached" in capsys.readouterr().out
    assert again == rows == tokenize_records(tok, RECORDS, 1024).rows
    assert len(entries()) == 1


def test_an_entry_of_an_older_layout_is_rebuilt(tiny_model, capsys):
    tok = load_tokenizer(tiny_model)
    rows, _ = tokenize(tok)
    (entry,) = entries()
    columns = entry.path / "columns.json"
    layout = json.loads(columns.read_text())
    del layout["format"]  # what ftp wrote before the mapped layout
    columns.write_text(json.dumps(layout))
    capsys.readouterr()
    again, cached = tokenize(tok)
    assert not cached and again == rows
    assert "tokenized train: 2 rows in" in capsys.readouterr().out
    assert json.loads(columns.read_text())["format"] == 2


def test_an_unwritable_cache_still_gives_the_tokens(tiny_model, tmp_path, monkeypatch):
    tok = load_tokenizer(tiny_model)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    # The cache's folder cannot be made (even by root): the entry cannot be stored.
    monkeypatch.setenv("FTP_TOKENIZED_CACHE_DIR", str(blocked / "tokenized"))
    rows, cached = tokenize(tok)
    assert not cached and rows == tokenize_records(tok, RECORDS, 1024).rows
    assert blocked.read_text() == "not a folder"


def test_changed_data_content_retokenizes(tiny_model):
    tok = load_tokenizer(tiny_model)
    tokenize(tok)
    changed = json.loads(json.dumps(RECORDS))
    changed[0]["messages"][1]["content"] = "Green."
    rows, cached = tokenize(tok, changed)
    assert not cached
    assert rows == tokenize_records(tok, changed, 1024).rows


def test_changed_tokenizer_files_retokenize(tiny_model, tmp_path):
    tokenize(load_tokenizer(tiny_model))
    copy = tmp_path / "tok"
    shutil.copytree(tiny_model, copy)
    assert tokenize(load_tokenizer(copy))[1]  # the same files elsewhere: the same tokenizer
    config = json.loads((copy / "tokenizer_config.json").read_text())
    config["model_max_length"] = 77
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    assert not tokenize(load_tokenizer(copy))[1]


def test_changed_special_tokens_retokenize(tiny_model):
    tok = load_tokenizer(tiny_model)
    tokenize(tok)
    tok.pad_token = "<|im_start|>"
    assert not tokenize(tok)[1]


def test_changed_chat_template_retokenizes(tiny_model):
    tok = load_tokenizer(tiny_model)
    before, _ = tokenize(tok)
    tok.chat_template = tok.chat_template.replace("<|im_start|>", "<|im_start|> ")
    rows, cached = tokenize(tok)
    assert not cached
    assert rows != before


def test_changed_options_retokenize(tiny_model):
    tok = load_tokenizer(tiny_model)
    tokenize(tok)
    assert not tokenize(tok, max_length=40)[1]
    assert tokenize(tok, max_length=40)[1]
    assert not tokenize(tok, assistant_only_loss=False)[1]


def test_changed_plugin_version_retokenizes(tiny_model, monkeypatch):
    import ftp_builtin.methods.tokenized as tokenized

    tok = load_tokenizer(tiny_model)
    tokenize(tok)
    assert tokenize(tok)[1]
    monkeypatch.setattr(tokenized, "version", lambda name: "999.0")
    assert not tokenize(tok)[1]


def test_each_key_part_changes_the_key(tiny_model):
    tok = load_tokenizer(tiny_model)
    plugin = {"plugin": "p", "version": "1", "code": "x"}
    base = make_key(RECORDS, tok, {"max_length": 8}, plugin)
    assert make_key(RECORDS, tok, {"max_length": 8}, dict(plugin)) == base
    assert make_key(RECORDS[:1], tok, {"max_length": 8}, plugin).data != base.data
    assert make_key(RECORDS, tok, {"max_length": 9}, plugin).options != base.options
    assert make_key(RECORDS, tok, {"max_length": 8}, {**plugin, "version": "2"}).plugin \
        != base.plugin
    tok.chat_template = "{{ messages }}"
    assert make_key(RECORDS, tok, {"max_length": 8}, plugin).template != base.template


def test_an_interrupted_write_leaves_no_entry(tmp_path):
    key = CacheKey("d", "t", "c", "o", "p")

    def write(folder: Path) -> None:
        (folder / "rows.bin").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store(key, write, "interrupted", root=tmp_path)
    assert lookup(key, tmp_path) is None
    assert list(tmp_path.iterdir()) == []  # the temporary folder is gone too
    # A leftover from a process that was killed outright is never read as an entry.
    (tmp_path / f".tmp-{key.key}-123").mkdir()
    assert lookup(key, tmp_path) is None and entries(tmp_path) == []


def test_cache_ls_and_clear(tiny_model, _tokenized_cache):
    tokenize(load_tokenizer(tiny_model))
    # What a killed run leaves: a temporary folder with ftp's marker in it.
    leftover = _tokenized_cache / f".tmp-{'0' * 32}-killed"
    leftover.mkdir()
    (leftover / ".ftp-partial-entry").touch()
    (leftover / "rows.bin").write_bytes(b"half")
    runner = CliRunner()
    out = runner.invoke(cli, ["cache", "ls"])
    assert out.exit_code == 0, out.output
    assert "stage 'sft' (sft), train, 2 records" in out.output
    assert "1 entries" in out.output
    listed = json.loads(runner.invoke(cli, ["cache", "ls", "--json"]).output)
    assert listed[0]["rows"] == 2 and listed[0]["size"] > 0
    refused = runner.invoke(cli, ["cache", "clear"], input="n\n")
    assert refused.exit_code == 1 and len(entries()) == 1
    out = runner.invoke(cli, ["cache", "clear", "--yes"])
    assert out.exit_code == 0 and "removed 1 entries" in out.output
    assert list(_tokenized_cache.iterdir()) == []


def test_second_run_of_a_pipeline_uses_the_cache(tiny_model, tmp_path):
    data = tmp_path / "chat.json"
    data.write_text(json.dumps([{"messages": r["messages"]} for r in RECORDS] * 2))
    pipeline = write_pipeline(tmp_path / "p.toml", f"""
        [pipeline]
        name = "cached"
        output_dir = "run"
        [model]
        path = "{tiny_model}"
        [data.chat]
        loader = "json"
        path = "chat.json"
        format = "messages"
        [[stages]]
        method = "sft"
        data = "chat"
        max_steps = 1
        batch_size = 2
        """)
    runner = CliRunner()
    first = runner.invoke(cli, ["run", str(pipeline)])
    assert first.exit_code == 0, first.output
    assert "tokenized train: 4 rows in" in first.output
    second = runner.invoke(cli, ["run", str(pipeline), "--overwrite"])
    assert second.exit_code == 0, second.output
    assert "tokenized train: cached (4 rows)" in second.output
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    (event,) = [m for m in metrics if m.get("event") == "tokenized"]
    assert event["cached"] is True and event["examples"] == 4


PAIRS = [
    {"prompt": [{"role": "user", "content": "Pick a colour."}],
     "chosen": [{"role": "assistant", "content": "Blue."}],
     "rejected": [{"role": "assistant", "content": "I will not."}]},
    {"prompt": [{"role": "user", "content": "Pick a fruit."}],
     "chosen": [{"role": "assistant", "content": "A pear."}],
     "rejected": [{"role": "assistant", "content": "No."}]},
]


def test_dpo_reuses_trls_tokenization_from_the_cache(tiny_model, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from ftp_builtin.methods.preference import DPO

    tok = load_tokenizer(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    method = DPO(DPO.Config(bf16=False, max_length=64, precompute_ref_log_probs=False))

    def dataset():
        ctx = TrainContext(stage="dpo", model=model, tokenizer=tok, provider=None, train=PAIRS,
                           eval=None, adapter=None, output_dir=tmp_path, seed=0)
        return method.trainer(ctx).train_dataset

    cold = dataset()
    assert "tokenized train: 2 rows in" in capsys.readouterr().out
    warm = dataset()
    assert "tokenized train: cached (2 rows)" in capsys.readouterr().out
    columns = ("prompt_ids", "chosen_ids", "rejected_ids")
    assert [[r[c] for c in columns] for r in warm] == [[r[c] for c in columns] for r in cold]
