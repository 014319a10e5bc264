"""QLoRA (``[model] quantize = "4bit"``) and DoRA (``adapter = { use_dora = true }``) on this
CPU, with bitsandbytes, through the real CLI on a tiny Llama."""

import importlib.util
import json
from pathlib import Path

import pytest

from ftp.testing import config_problems, require_tool, run_ftp, write_pipeline

DATA = Path(__file__).parent / "data"
pytestmark = pytest.mark.usefixtures("one_thread")


def project(root: Path, tiny_model: Path, model_extra: str, adapter: str) -> Path:
    (root / "d.json").write_text((DATA / "alpaca.json").read_text(encoding="utf-8"))
    write_pipeline(root / "p.toml", f"""
        [pipeline]
        name = "q"
        [model]
        path = "{tiny_model}"
        {model_extra}
        [data.d]
        loader = "json"
        path = "d.json"
        format = "alpaca"
        placeholders = {{ name = "Nova", author = "Northwind Labs" }}
        [[stages]]
        method = "sft"
        data = "d"
        {adapter}
        bf16 = false
        max_steps = 3
        batch_size = 2
        learning_rate = 1e-2
    """)
    return root


def weights(folder: Path, name: str = "model.safetensors") -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / name))


def test_a_4bit_model_needs_an_adapter(tmp_path: Path, tiny_model: Path) -> None:
    require_tool(importlib.util.find_spec("bitsandbytes") is not None,
                 "bitsandbytes (the qlora extra: pip install 'ftp[qlora]')")
    root = project(tmp_path, tiny_model, 'quantize = "4bit"', "")
    found = config_problems(run_ftp("validate", "p.toml", cwd=root))
    assert found == ['stages[0].adapter: a 4-bit model ([model] quantize) trains through an '
                     'adapter only (QLoRA): add adapter = { type = "lora" }']


def test_qlora_trains_in_4bit_and_merges_into_full_precision(tmp_path: Path,
                                                             tiny_model: Path) -> None:
    require_tool(importlib.util.find_spec("bitsandbytes") is not None,
                 "bitsandbytes (the qlora extra: pip install 'ftp[qlora]')")
    root = project(tmp_path, tiny_model, 'quantize = "4bit"', "adapter = { r = 4, alpha = 8 }")
    done = run_ftp("run", "p.toml", "-o", "run", cwd=root, OMP_NUM_THREADS="1")
    assert done.returncode == 0, done.stdout + done.stderr
    run = root / "run"
    base, merged = weights(tiny_model), weights(run / "model")
    adapter = weights(run / "adapter", "adapter_model.safetensors")
    config = json.loads((run / "model" / "config.json").read_text())
    assert "quantization_config" not in config  # an ordinary full-precision model folder
    name = next(k for k in base if k.endswith("layers.0.self_attn.q_proj.weight"))
    a = next(v for k, v in adapter.items() if "layers.0.self_attn.q_proj.lora_A" in k)
    b = next(v for k, v in adapter.items() if "layers.0.self_attn.q_proj.lora_B" in k)
    assert merged[name].dtype == base[name].dtype
    assert b.abs().max() > 0  # the adapter learnt something
    # The update goes into the original full-precision weights, not into rounded 4-bit ones.
    expected = base[name] + (8 / 4) * (b.float() @ a.float())
    assert (merged[name] - expected).abs().max() < 1e-5


def test_dora_trains_and_saves_its_magnitudes(tmp_path: Path, tiny_model: Path) -> None:
    root = project(tmp_path, tiny_model, "", "adapter = { r = 4, use_dora = true }")
    done = run_ftp("run", "p.toml", "-o", "run", cwd=root, OMP_NUM_THREADS="1")
    assert done.returncode == 0, done.stdout + done.stderr
    run = root / "run"
    assert json.loads((run / "adapter" / "adapter_config.json").read_text())["use_dora"] is True
    adapter = weights(run / "adapter", "adapter_model.safetensors")
    assert any("lora_magnitude_vector" in k for k in adapter)
    base, merged = weights(tiny_model), weights(run / "model")
    name = next(k for k in base if k.endswith("layers.0.self_attn.q_proj.weight"))
    assert (merged[name] - base[name]).abs().max() > 0
