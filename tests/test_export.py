"""`ftp export`: GGUF (checked in llama.cpp against transformers), Ollama, safetensors.

The model is a tiny random Llama with SmolLM2's real tokenizer and chat template (from the
offline catalog), so that the vocabulary, merges, pre-tokenizer, special tokens and template
written into the GGUF are the real ones.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from ftp.testing import one_line_error, require_tool, run_ftp, run_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.fixture
def needs_llama_cpp() -> None:
    """llama.cpp (llama-cpp-python) for the tests that load a GGUF: skipped locally without it,
    a failure under CI."""
    require_tool(importlib.util.find_spec("llama_cpp") is not None,
                 "llama-cpp-python (the gguf extra: pip install 'ftp[gguf]')")


@pytest.fixture(scope="module")
def smol(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer) -> Path:
    """A tiny random Llama with SmolLM2's tokenizer, saved as a model folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("smol") / "tiny-smol"
    tok = smollm2_tokenizer
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         tie_word_embeddings=True, initializer_range=0.1)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def export(*args: str, cwd: Path):
    return run_ftp("export", *args, cwd=cwd, timeout=900)


@pytest.mark.usefixtures("needs_llama_cpp")
@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["f32", "f16", "q8_0"])
def test_gguf_export_loads_in_llama_cpp_and_passes_parity(smol, tmp_path, dtype):
    result = export(str(smol), "--format", "gguf", "--dtype", dtype, "-o", "out",
                    cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    gguf = tmp_path / "out" / f"tiny-smol-{dtype}.gguf"
    assert result.stdout.strip() == str(Path("out") / gguf.name)
    assert "parity with transformers in llama.cpp: " in result.stderr
    assert "prompts and stop tokens equal" in result.stderr
    record = json.loads((tmp_path / "out" / "export.json").read_text())[-1]
    assert record["format"] == "gguf" and record["dtype"] == dtype
    assert record["parity"]["checked"] and record["parity"]["prompts_equal"]
    assert record["parity"]["stop_tokens"] == ["<|im_end|>"]
    if dtype in ("f32", "f16"):  # equal, or different only at a reported near tie
        for answer in record["parity"]["answers"]:
            assert answer["equal"] or "near tie" in result.stderr

    from ftp_builtin.use.llamacpp import LlamaCpp

    llm = LlamaCpp(gguf)
    meta = llm.llm.metadata
    assert meta["general.architecture"] == "llama"
    assert meta["tokenizer.ggml.pre"] == "gpt-2"  # what the catalog's tokenizer.json splits as
    assert meta["tokenizer.ggml.eos_token_id"] == "2"  # <|im_end|>
    assert "You are a helpful AI assistant named SmolLM" in llm.template
    ids = llm.prompt_ids([{"role": "user", "content": "Hi"}])
    assert llm.piece(ids[0]) == "<|im_start|>" and llm.piece(ids[1]) == "system"


@pytest.mark.usefixtures("needs_llama_cpp")
@pytest.mark.slow
def test_a_wrong_template_fails_parity_naming_the_first_differing_token(smol, tmp_path):
    from ftp import RunError
    from ftp_builtin.use import parity
    from ftp_builtin.use.source import Source, load

    assert export(str(smol), "--format", "gguf", "--dtype", "f32", "-o", ".",
                  cwd=tmp_path).returncode == 0
    gguf = tmp_path / "tiny-smol-f32.gguf"
    # The template drifts in the file only: SmolLM2's default system turn is no longer added.
    data = gguf.read_bytes()
    right = b"messages[0]['role'] != 'system'"
    assert data.count(right) == 1
    wrong = tmp_path / "wrong.gguf"
    wrong.write_bytes(data.replace(right, b"messages[0]['role'] == 'system'"))

    model, tokenizer = load(Source(smol, "tiny-smol"))
    parity.check(gguf, model, tokenizer, "f32")  # the file as written agrees
    with pytest.raises(RunError) as caught:
        parity.check(wrong, model, tokenizer, "f32")
    assert str(caught.value) == (
        "parity: prompt 1: token 1: transformers 'system' (9690), llama.cpp 'user' (4093)")


@pytest.mark.usefixtures("needs_llama_cpp")
@pytest.mark.slow
def test_ollama_modelfile_has_the_template_stop_and_default_system(smol, tmp_path):
    result = export(str(smol), "--format", "ollama", "--dtype", "q8_0", "-o", ".",
                    cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "ollama" / "Modelfile").read_text()
    assert text.splitlines()[0] == "FROM ./tiny-smol-q8_0.gguf"
    assert ('TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}'
            '<|im_end|>\n{{ end }}<|im_start|>assistant\n"""') in text
    assert 'PARAMETER stop "<|im_end|>"' in text
    # SmolLM2's template adds this system turn when there is none; Ollama does it by SYSTEM.
    assert ('SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""'
            in text)
    assert (tmp_path / "ollama" / "tiny-smol-q8_0.gguf").is_file()


@pytest.mark.slow
def test_the_go_template_renders_as_the_jinja_template(smollm2_tokenizer):
    from ftp_builtin.use import ollama

    template, default = ollama.translate(smollm2_tokenizer)
    assert default.startswith("You are a helpful AI assistant named SmolLM")
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                {"role": "user", "content": "c"}]
    assert ollama.render_go(template, messages) == (
        "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n"
        "<|im_start|>user\nc<|im_end|>\n<|im_start|>assistant\n")
    ollama.verify(smollm2_tokenizer, template, default)
    with pytest.raises(Exception, match="renders differently"):
        ollama.verify(smollm2_tokenizer, template.replace("<|im_end|>\n{{ end", "{{ end"),
                      default)


@pytest.mark.slow
def test_an_existing_file_is_kept_without_overwrite(smol, tmp_path):
    args = (str(smol), "--format", "gguf", "--dtype", "f16", "-o", ".", "--no-parity")
    assert export(*args, cwd=tmp_path).returncode == 0
    gguf = tmp_path / "tiny-smol-f16.gguf"
    gguf.write_bytes(b"mine")
    line = one_line_error(export(*args, cwd=tmp_path))
    assert line == f"error: {Path('.') / gguf.name} exists; pass --overwrite to replace it"
    assert gguf.read_bytes() == b"mine"
    assert export(*args, "--overwrite", cwd=tmp_path).returncode == 0
    assert gguf.read_bytes()[:4] == b"GGUF"
    records = json.loads((tmp_path / "export.json").read_text())
    assert [r["parity"] for r in records] == [{"checked": False, "why": "--no-parity"}] * 2


def test_a_non_llama_architecture_is_one_clear_error(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from ftp.testing import make_tiny_tokenizer

    folder = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=512)).save_pretrained(
        str(folder))
    make_tiny_tokenizer().save_pretrained(str(folder))
    line = one_line_error(export(str(folder), "--format", "gguf", cwd=tmp_path))
    assert line == ("error: GGUF export supports the Llama architecture (SmolLM2 and other "
                    "Llama models); this model is 'gpt2'")
    assert not (tmp_path / "export").exists()


@pytest.mark.usefixtures("needs_llama_cpp")
def test_a_run_exports_safetensors_and_an_ollama_model_with_its_system_prompt(
        tmp_path, tiny_model):
    rows = [{"instruction": "Who are you?", "output": "I am Nova."}] * 4
    (tmp_path / "d.json").write_text(json.dumps(rows), encoding="utf-8")
    run = run_pipeline(f"""
        [pipeline]
        name = "nova"
        [model]
        path = "{tiny_model}"
        [data.d]
        loader = "json"
        path = "d.json"
        format = "alpaca"
        format_options = {{ system_prompt = "You are Nova." }}
        [[stages]]
        method = "sft"
        data = "d"
        max_steps = 2
        batch_size = 2
        bf16 = false
        [plugins.export]
        artifacts = [{{ target = "gguf", dtype = "f32" }}]
    """, tmp_path).run_dir
    assert (run / "export" / "run-f32.gguf").is_file()  # the run ended with its artifact
    result = export(str(run), "--format", "safetensors", "--dtype", "bf16", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = run / "export" / "run-bf16"
    assert json.loads((folder / "config.json").read_text())["dtype"] == "bfloat16"
    assert (folder / "tokenizer.json").is_file()

    result = export(str(run), "--format", "ollama", "--dtype", "f32", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = (run / "export" / "ollama" / "Modelfile").read_text()
    assert 'SYSTEM """You are Nova."""' in text and 'PARAMETER stop "<|im_end|>"' in text
    records = json.loads((run / "export.json").read_text())
    assert [(r["format"], r["dtype"]) for r in records] == [
        ("gguf", "f32"), ("safetensors", "bf16"), ("ollama", "f32")]
    assert records[0]["parity"]["checked"] and records[2]["parity"]["checked"]


def test_an_artifact_is_checked_at_validation(tmp_path, tiny_model):
    from ftp import ConfigError
    from ftp.config import load_pipeline
    from ftp.testing import plugin_set, write_pipeline

    path = write_pipeline(tmp_path / "p.toml", f"""
        [pipeline]
        name = "nova"
        [model]
        path = "{tiny_model}"
        [data.d]
        loader = "json"
        path = "d.json"
        format = "alpaca"
        [[stages]]
        method = "sft"
        data = "d"
        [plugins.export]
        artifacts = [{{ target = "safetensors", dtype = "q8_0" }}, {{ target = "onnx" }}]
    """)
    (tmp_path / "d.json").write_text("[]")
    with pytest.raises(ConfigError) as caught:
        load_pipeline(path, plugin_set())
    text = str(caught.value)
    assert text.count("\n  - ") == 2, text
    assert "plugins.export.artifacts[0]" in text and "q8_0 is a GGUF type" in text
    assert "plugins.export.artifacts[1].target" in text


@pytest.mark.usefixtures("needs_llama_cpp")
def test_drift_through_the_command_exits_1_and_is_recorded(tiny_model, tmp_path):
    # A real-world drift: the template names a special token that transformers passes to it
    # and llama-cpp-python's renderer does not.
    import shutil

    from transformers import AutoTokenizer

    from ftp.testing import CHATML_TEMPLATE

    folder = tmp_path / "drifts"
    shutil.copytree(tiny_model, folder)
    tok = AutoTokenizer.from_pretrained(str(folder))
    tok.chat_template = "{{ unk_token }}" + CHATML_TEMPLATE
    tok.save_pretrained(str(folder))
    result = export(str(folder), "--format", "gguf", "--dtype", "f32", "-o", ".", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: parity: prompt 1: token 0: transformers '<|endoftext|>' (0), "
                      "llama.cpp '<|im_start|>' (1)"]
    record = json.loads((tmp_path / "export.json").read_text())[-1]
    assert record["parity"] == {"checked": True, "failed": errors[0][len("error: "):]}
