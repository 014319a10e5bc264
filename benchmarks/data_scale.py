"""Time and peak memory of the data path (load, format, tokenize, cache, one step) by size.

    python benchmarks/data_scale.py [--sizes 10000,100000,1000000] [--workdir DIR]
        [--model tiny | smollm2-135m-instruct | FOLDER]

For each size, a generated instruction file (benchmarks/make_big_data.py, alpaca JSON Lines,
~0.8 KB a row; written once into the work folder, never committed) goes through ``ftp run`` on
a one-step sft pipeline (1% held out), twice, each in a child process of its own:

1. cold: the tokenized-data cache empty (the work folder's own), so every row is loaded,
   formatted, tokenized and cached before the first step;
2. warm: the same run again, the tokens read from the cache.

3. ``ftp data inspect`` on the same pipeline (its report in the size's folder).

It prints per size and run: the rows, the wall time, microseconds per row, the child's peak
RSS (``wait4``) and its growth per row added since the previous size (+KB/row: the fixed cost
of Python, torch and the model taken out); the data path's own peak (``data MB``: the child's
``VmHWM`` once ``ftp run`` says the training tokens are ready, before the trainer is built)
and its growth per row; the tokens of the one training step (the whole run's peak is often
that step's: its logits follow the batch drawn, which differs by size); and the time of each
run step ftp records (load data — the first row only, the rest is read as it is formatted —,
format data, load model, train — which holds tokenization, caching and the one step). The
cost per row should fall or stay flat as the sizes grow, and the data path's +KB/row stay
near zero: formatted rows past 32 MiB wait in a temporary file, tokens are written to the
cache as they are made and mapped back, so what is left per row is row offsets and origins
(~36 bytes) and the pages of the mapped files the kernel keeps.
``--model tiny`` (the default) trains a tiny random Llama that uses SmolLM2's real tokenizer, so
tokenization costs what it costs for SmolLM2 while the one training step costs next to
nothing. Run it on an otherwise idle machine; smoke-test it with ``--sizes 2000``.

Disk: the work folder holds each size's file (~0.8 KB a row: 1,000,000 rows ~760 MiB) and its
tokenized cache (~1.3 KB a row with SmolLM2's tokenizer: ~1.3 GB at 1,000,000 rows), so the
default sizes need ~2.3 GB; delete the folder afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_big_data import write  # noqa: E402  (a sibling script)


def tiny_model(folder: Path) -> Path:
    """A tiny random Llama with SmolLM2-135M-Instruct's tokenizer and chat template."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from ftp_builtin.models import HFProvider

    source = HFProvider(HFProvider.Config(path="smollm2-135m-instruct")).source()
    tok = AutoTokenizer.from_pretrained(source)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def pipeline(folder: Path, data: Path, model: str) -> Path:
    """A one-step sft pipeline on ``data``."""
    path = folder / "pipeline.toml"
    path.write_text(f"""[pipeline]
name = "data-scale"
seed = 0

[model]
path = {json.dumps(model)}

[data.big]
loader = "json"
path = {json.dumps(str(data))}
format = "alpaca"
eval_fraction = 0.01

[[stages]]
method = "sft"
data = "big"
max_steps = 1
batch_size = 8
max_length = 1024
""", encoding="utf-8")
    return path


#: What ``ftp run`` prints once the training rows' tokens are ready (from the cache or not).
TOKENS_READY = "tokenized train:"


@dataclass
class Child:
    """One ``ftp`` child process, measured."""

    seconds: float
    #: Peak RSS over the whole run, MB (``wait4``).
    peak: float
    #: Peak RSS until the tokens were ready, MB: the data path alone, before the trainer and
    #: its step (whose memory follows the batch drawn, not the file). None where not printed.
    data_peak: float | None = None


def child(args: list[str], cache: Path, log: Path) -> Child:
    """``ftp ARGS`` in a child process, polled: its time, peak RSS and data-path peak RSS."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FTP_TOKENIZED_CACHE_DIR": str(cache)}
    started = time.perf_counter()
    data_peak = None
    with log.open("w") as f:
        # ftp re-executes itself (os.execve) to preload jemalloc: the pid stays the same.
        proc = subprocess.Popen([sys.executable, "-m", "ftp", *args], stdout=f,
                                stderr=subprocess.STDOUT, env=env)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if data_peak is None and TOKENS_READY in log.read_text(errors="replace"):
                data_peak = _high_water(proc.pid)
            time.sleep(0.05)
    took = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-10:])
        sys.exit(f"ftp {args[0]} failed with exit code {code} (log {log}):\n{tail}")
    return Child(took, usage.ru_maxrss / 1024, data_peak)


def _high_water(pid: int) -> float | None:
    """A live process's peak RSS so far (``VmHWM``), MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def run(pipeline_file: Path, out: Path, cache: Path, log: Path) -> tuple[Child, dict, int]:
    """``ftp run`` in a child: its measures, step timings and the first step's tokens."""
    measured = child(["run", str(pipeline_file), "-o", str(out), "--overwrite"], cache, log)
    timings = json.loads((out / "run.json").read_text(encoding="utf-8")).get("timings", {})
    tokens = 0
    for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        tokens = json.loads(line).get("num_input_tokens_seen", tokens)
    return measured, timings, tokens


def row_line(size: int, label: str, measured: Child, before: dict[str, tuple],
             steps: str = "") -> str:
    """One line of the table; ``before`` holds the previous size's (rows, peaks) per label."""
    peaks = (measured.peak, measured.data_peak)
    growth = ["", ""]
    if label in before:
        rows, earlier = before[label]
        for i, (now, then) in enumerate(zip(peaks, earlier, strict=True)):
            if now is not None and then is not None:
                growth[i] = f"{(now - then) * 1024 / (size - rows):.2f}"
    before[label] = (size, peaks)
    data = f"{measured.data_peak:,.0f}" if measured.data_peak is not None else "-"
    took = measured.seconds
    return (f"{size:>10,} {label:>7} {took:>8.1f} {took / size * 1e6:>8.1f} "
            f"{measured.peak:>8,.0f} {growth[0]:>8} {data:>8} {growth[1]:>8}  {steps}")


def main() -> None:
    """Parse the command line; run each size cold and warm; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--workdir", type=Path, default=Path("data-scale-work"))
    parser.add_argument("--model", default="tiny")
    args = parser.parse_args()
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    model = str(tiny_model(work / "tiny-model")) if args.model == "tiny" else args.model
    print(f"{'rows':>10} {'run':>7} {'wall s':>8} {'us/row':>8} {'peak MB':>8} {'+KB/row':>8} "
          f"{'data MB':>8} {'+KB/row':>8}  first step's tokens; steps (s)")
    before: dict[str, tuple] = {}
    for size in sizes:
        data = work / f"rows-{size}.jsonl"
        if not data.is_file():
            write(size, data)
        folder = work / f"size-{size}"
        folder.mkdir(exist_ok=True)
        cache = folder / "cache"
        if cache.exists():
            import shutil

            shutil.rmtree(cache)
        pipe = pipeline(folder, data, model)
        for label in ("cold", "warm"):
            measured, timings, tokens = run(pipe, folder / f"run-{label}", cache,
                                            folder / f"{label}.log")
            steps = f"{tokens}; " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
            print(row_line(size, label, measured, before, steps), flush=True)
        measured = child(["data", "inspect", str(pipe), "--out", str(folder / "inspect")],
                         cache, folder / "inspect.log")
        print(row_line(size, "inspect", measured, before), flush=True)
        print(f"{'':>10} {'':>7} disk: {_disk(work) / 2**20:,.0f} MiB in {work}", flush=True)


def _disk(folder: Path) -> int:
    """Bytes under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


if __name__ == "__main__":
    main()
