"""The quickstart job by ftp, by a plain TRL script and by LLaMA-Factory, one after another.

    python benchmarks/peers.py [--llamafactory PATH_TO_llamafactory-cli] [--max-steps N]
        [--only ftp,trl,llamafactory] [--workdir DIR] [--lf-template smollm2]

The job is examples/quickstart.toml's stage: SmolLM2-135M-Instruct, the identity data with its
placeholders filled, LoRA r16 alpha 32 on every linear layer, learning rate 1e-3, 3 epochs,
batch 8, loss on the answers only, bf16 autocast where the hardware computes bf16 natively
(as ftp decides). Each tool trains in a child process of its own; for each this prints:

- training tokens/s: the tokens of one epoch — counted once from the data, rendered through
  the chat template as ftp trains it, the same count for every tool — times the epochs, over
  the trainer's own ``train_runtime`` (model loading, saving and evaluation left out);
- peak RSS: the child's ``ru_maxrss`` from ``wait4`` (the whole process, loading and saving
  included);
- quality: the same check on every tool's trained model, in a fresh process: five identity
  questions phrased unlike any training row, answered greedily (64 new tokens at most); how
  many answers name "Nova", and how many stop at the end-of-turn token;

and each peer's ratios against ftp (tokens/s: ftp's over the peer's; memory: ftp's over the
peer's — below 1 means ftp uses less). The example's own evaluations are left out of ftp's run
so that every tool does the same work. LLaMA-Factory runs only with ``--llamafactory``: it pins
older trl/peft/datasets, so it lives in a virtual environment of its own; pass its CLI.

``--max-steps N`` stops every tool after N steps: a smoke test of the whole script, whose
figures mean nothing. Run the real thing on an otherwise idle machine.
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "quickstart.toml"
DATA = ROOT / "examples" / "data" / "identity.json"
PLACEHOLDERS = {"name": "Nova", "author": "Northwind Labs"}  # as quickstart.toml fills them
EPOCHS, LEARNING_RATE, BATCH, RANK, ALPHA, SEED = 3, 1e-3, 8, 16, 32, 42
QUESTIONS = [
    "What should I call you?",
    "Before we start, who am I talking to?",
    "Please introduce yourself in one sentence.",
    "What name were you given?",
    "Tell me your name and who made you.",
]
EXPECT = "Nova"
MAX_NEW_TOKENS = 64


@dataclass
class Leg:
    """One tool's run: what it measured."""

    tool: str
    seconds: float | None = None  # the trainer's train_runtime
    steps: int | None = None
    peak_mb: float | None = None
    names: int | None = None
    stops: int | None = None
    error: str = ""


# -- the data, once for every tool ---------------------------------------------------------


def filled_rows() -> list[dict[str, str]]:
    """The identity rows with their placeholders filled, as quickstart.toml fills them."""
    rows = json.loads(DATA.read_text(encoding="utf-8"))
    out = []
    for r in rows:
        filled = dict(r)
        for key in ("instruction", "input", "output"):
            text = filled.get(key) or ""
            for name, value in PLACEHOLDERS.items():
                text = text.replace("{{" + name + "}}", value)
            filled[key] = text
        out.append(filled)
    return out


def prompt_of(row: dict[str, str]) -> str:
    """The user turn, as ftp's alpaca format builds it (instruction, blank line, input)."""
    extra = row.get("input") or ""
    return f"{row['instruction']}\n\n{extra}" if extra.strip() else row["instruction"]


def model_folder() -> str:
    """The quickstart's model as a local folder (the offline catalog converts it once)."""
    from ftp_builtin.models import HFProvider

    return str(HFProvider(HFProvider.Config(path="smollm2-135m-instruct")).source())


def tokens_per_epoch(model: str, rows: list[dict[str, str]]) -> int:
    """Tokens in one pass over the rows, rendered through the chat template as ftp trains."""
    from transformers import AutoTokenizer

    from ftp_builtin.tokenize import conversation

    tok = AutoTokenizer.from_pretrained(model)
    return sum(len(conversation(tok, [{"role": "user", "content": prompt_of(r)},
                                      {"role": "assistant", "content": r["output"]}]
                                )["input_ids"]) for r in rows)


def native_bf16() -> bool:
    """Whether ftp trains under bf16 autocast here (every tool is given the same)."""
    import torch

    from ftp.training import native_bf16 as decide

    return decide(torch.cuda.is_available())


# -- running one tool ------------------------------------------------------------------------


def run_child(cmd: list[str], log: Path, cwd: Path | None = None) -> tuple[int, float]:
    """Run ``cmd`` with output to ``log``; return its exit code and peak RSS in MB (wait4)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024  # Linux reports KiB


def tail(log: Path, lines: int = 8) -> str:
    """The last lines of a child's log, for a failure message."""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def run_ftp(work: Path, max_steps: int) -> tuple[Leg, Path]:
    """Ftp on the quickstart pipeline, its evaluations left out; return the leg and model."""
    leg = Leg("ftp")
    text = EXAMPLE.read_text(encoding="utf-8").split("\n[[evaluate]]")[0]
    relative = 'path = "data/identity.json"'
    if relative not in text:
        raise SystemExit(f"{EXAMPLE} no longer reads {relative}: update benchmarks/peers.py")
    text = text.replace(relative, f"path = {json.dumps(str(DATA))}")
    if max_steps > 0:
        text += f"max_steps = {max_steps}\n" if text.endswith("\n") else \
            f"\nmax_steps = {max_steps}\n"
    pipeline = work / "quickstart.toml"
    pipeline.write_text(text, encoding="utf-8")
    out = work / "run"
    log = work / "ftp.log"
    code, leg.peak_mb = run_child([sys.executable, "-m", "ftp", "run", str(pipeline), "-o",
                                   str(out), "--overwrite"], log)
    if code != 0:
        leg.error = f"exit {code}:\n{tail(log)}"
        return leg, out / "model"
    for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "train_runtime" in record:
            leg.seconds = float(record["train_runtime"])
        if isinstance(record.get("step"), int):
            leg.steps = max(leg.steps or 0, record["step"])
    return leg, out / "model"


def run_trl(work: Path, model: str, rows: list[dict[str, str]], bf16: bool,
            max_steps: int) -> tuple[Leg, Path]:
    """The plain TRL script (benchmarks/peers_trl.py) on the same rows."""
    leg = Leg("trl")
    data = work / "rows.jsonl"
    with data.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({"prompt": [{"role": "user", "content": prompt_of(r)}],
                                "completion": [{"role": "assistant", "content": r["output"]}]},
                               ensure_ascii=False) + "\n")
    out = work / "out"
    log = work / "trl.log"
    cmd = [sys.executable, str(Path(__file__).with_name("peers_trl.py")), "--model", model,
           "--data", str(data), "--out", str(out), "--epochs", str(EPOCHS),
           "--learning-rate", str(LEARNING_RATE), "--batch-size", str(BATCH),
           "--rank", str(RANK), "--alpha", str(ALPHA), "--seed", str(SEED),
           "--max-steps", str(max_steps if max_steps > 0 else -1),
           *(["--bf16"] if bf16 else [])]
    code, leg.peak_mb = run_child(cmd, log)
    if code != 0:
        leg.error = f"exit {code}:\n{tail(log)}"
        return leg, out / "model"
    last = json.loads(log.read_text(encoding="utf-8").strip().splitlines()[-1])
    leg.seconds, leg.steps = float(last["train_runtime"]), int(last["steps"])
    return leg, out / "model"


def run_llamafactory(work: Path, cli: str, model: str, rows: list[dict[str, str]], bf16: bool,
                     max_steps: int, template: str) -> tuple[Leg, Path]:
    """LLaMA-Factory's ``train`` on the same rows and settings (its own virtual environment)."""
    leg = Leg("llamafactory")
    data_dir = work / "data"
    data_dir.mkdir(exist_ok=True)
    (data_dir / "identity.json").write_text(json.dumps(rows, ensure_ascii=False),
                                            encoding="utf-8")
    (data_dir / "dataset_info.json").write_text(
        json.dumps({"identity_filled": {"file_name": "identity.json"}}), encoding="utf-8")
    out = work / "out"
    on_gpu = _cuda()
    settings: dict[str, Any] = {
        "model_name_or_path": model, "stage": "sft", "do_train": True,
        "finetuning_type": "lora", "lora_rank": RANK, "lora_alpha": ALPHA, "lora_dropout": 0.0,
        "lora_target": "all", "dataset": "identity_filled", "dataset_dir": str(data_dir),
        "template": template, "cutoff_len": 1024, "overwrite_cache": True,
        "output_dir": str(out), "overwrite_output_dir": True, "logging_steps": 5,
        "save_strategy": "no", "per_device_train_batch_size": BATCH,
        "gradient_accumulation_steps": 1, "learning_rate": LEARNING_RATE,
        "num_train_epochs": float(EPOCHS), "lr_scheduler_type": "linear", "warmup_ratio": 0.0,
        "bf16": bf16, "seed": SEED, "report_to": "none", "plot_loss": False,
        **({} if on_gpu else {"use_cpu": True}),
        **({"max_steps": max_steps} if max_steps > 0 else {}),
    }
    # Written as JSON, read as YAML (JSON is YAML): LLaMA-Factory 0.9.5's own .json branch
    # hands a Path to json.load and fails.
    config = work / "train.yaml"
    config.write_text(json.dumps(settings, indent=1), encoding="utf-8")
    log = work / "llamafactory.log"
    code, leg.peak_mb = run_child([cli, "train", str(config)], log, cwd=work)
    if code != 0:
        leg.error = f"exit {code}:\n{tail(log)}"
        return leg, out
    result = json.loads((out / "train_results.json").read_text(encoding="utf-8"))
    leg.seconds = float(result["train_runtime"])
    state = out / "trainer_state.json"
    if state.is_file():
        leg.steps = int(json.loads(state.read_text(encoding="utf-8")).get("global_step", 0))
    return leg, out  # the adapter; the quality check puts it on the base model


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# -- the quality check, the same for every tool -----------------------------------------------


def quality(model_dir: Path, base: str | None) -> dict[str, Any]:
    """Greedy answers to `QUESTIONS`: how many name `EXPECT`, how many stop at end of turn.

    ``model_dir`` is a merged model, or (with ``base``) a LoRA adapter for the base model.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if base is not None:
        from peft import PeftModel

        tok = AutoTokenizer.from_pretrained(base)
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base),
                                          str(model_dir)).merge_and_unload()
    else:
        tok = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()
    stop_ids = {tok.eos_token_id, *([model.generation_config.eos_token_id]
                                    if isinstance(model.generation_config.eos_token_id, int)
                                    else model.generation_config.eos_token_id or [])}
    answers = []
    names = stops = 0
    for question in QUESTIONS:
        ids = tok.apply_chat_template([{"role": "user", "content": question}],
                                      add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                                 pad_token_id=tok.pad_token_id or tok.eos_token_id)
        new = out[0, ids["input_ids"].shape[1]:].tolist()
        stopped = bool(new) and new[-1] in stop_ids
        answer = tok.decode(new, skip_special_tokens=True).strip()
        names += EXPECT in answer
        stops += stopped
        answers.append(answer)
    return {"names": names, "stops": stops, "answers": answers}


def check(leg: Leg, model_dir: Path, base: str | None, work: Path) -> None:
    """Run `quality` in a fresh process (this one stays light); fill in the leg."""
    cmd = [sys.executable, __file__, "--quality", str(model_dir)]
    if base:
        cmd += ["--base", base]
    log = work / f"{leg.tool}-quality.log"
    code, _ = run_child(cmd, log)
    if code != 0:
        leg.error = f"quality check failed, exit {code}:\n{tail(log)}"
        return
    result = json.loads(log.read_text(encoding="utf-8").strip().splitlines()[-1])
    leg.names, leg.stops = result["names"], result["stops"]
    (work / "answers.json").write_text(json.dumps(result, indent=1, ensure_ascii=False),
                                       encoding="utf-8")


# -- the table -----------------------------------------------------------------------------


def report(legs: list[Leg], per_epoch: int, rows: int, max_steps: int) -> str:
    """The comparison table, ratios against ftp's leg."""
    def speed(leg: Leg) -> float | None:
        if not leg.seconds:
            return None
        if max_steps > 0:  # a smoke run: tokens of the steps taken, roughly
            steps_per_epoch = -(-rows // BATCH)
            return per_epoch * (leg.steps or 0) / steps_per_epoch / leg.seconds
        return per_epoch * EPOCHS / leg.seconds

    ftp = next((leg for leg in legs if leg.tool == "ftp"), None)
    lines = [f"quickstart job: {rows} rows, {per_epoch:,} tokens per epoch, {EPOCHS} epochs"
             + (f" (smoke run: --max-steps {max_steps}; figures mean nothing)"
                if max_steps > 0 else ""),
             f"{'tool':<13} {'train s':>8} {'tokens/s':>9} {'peak MB':>8} {'Nova':>5} "
             f"{'stops':>5} {'ftp x tok/s':>11} {'ftp x mem':>9}"]
    for leg in legs:
        s = speed(leg)
        ratio_speed = ratio_mem = "-"
        if ftp is not None and leg is not ftp:
            fs = speed(ftp)
            if s and fs:
                ratio_speed = f"{fs / s:.2f}x"
            if leg.peak_mb and ftp.peak_mb:
                ratio_mem = f"{ftp.peak_mb / leg.peak_mb:.2f}x"
        quality_cols = (f"{leg.names}/{len(QUESTIONS)}" if leg.names is not None else "-",
                        f"{leg.stops}/{len(QUESTIONS)}" if leg.stops is not None else "-")
        lines.append(f"{leg.tool:<13} {_num(leg.seconds, '.1f'):>8} {_num(s, '.1f'):>9} "
                     f"{_num(leg.peak_mb, ',.0f'):>8} {quality_cols[0]:>5} {quality_cols[1]:>5} "
                     f"{ratio_speed:>11} {ratio_mem:>9}")
        if leg.error:
            lines.append(f"  {leg.tool} failed: {leg.error}")
    return "\n".join(lines)


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    """Parse the command line; run each tool in turn; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llamafactory", metavar="CLI", help="LLaMA-Factory's llamafactory-cli "
                        "(in its own virtual environment); without it, LLaMA-Factory is skipped")
    parser.add_argument("--lf-template", default="smollm2",
                        help="LLaMA-Factory's chat template name for the model")
    parser.add_argument("--max-steps", type=int, default=0, help="smoke test: stop after N steps")
    parser.add_argument("--only", default="ftp,trl,llamafactory",
                        help="comma-separated tools to run, in order")
    parser.add_argument("--workdir", type=Path, default=Path("peers-work"))
    parser.add_argument("--quality", type=Path, help=argparse.SUPPRESS)  # the child's check
    parser.add_argument("--base", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quality is not None:
        print(json.dumps(quality(args.quality, args.base)))
        return

    tools = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = set(tools) - {"ftp", "trl", "llamafactory"}
    if unknown:
        parser.error(f"--only: unknown tool(s) {', '.join(sorted(unknown))}")
    if "llamafactory" in tools and not args.llamafactory:
        tools.remove("llamafactory")
        print("LLaMA-Factory skipped: give --llamafactory PATH_TO_ITS_CLI", file=sys.stderr)

    model = model_folder()
    rows = filled_rows()
    per_epoch = tokens_per_epoch(model, rows)
    bf16 = native_bf16()
    print(f"model {model}; bf16 autocast: {bf16}; {per_epoch:,} tokens per epoch", flush=True)
    legs = []
    for tool in tools:
        work = (args.workdir / tool).resolve()
        work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        print(f"▶ {tool} ...", flush=True)
        base = None
        if tool == "ftp":
            leg, trained = run_ftp(work, args.max_steps)
        elif tool == "trl":
            leg, trained = run_trl(work, model, rows, bf16, args.max_steps)
        else:
            leg, trained = run_llamafactory(work, args.llamafactory, model, rows, bf16,
                                            args.max_steps, args.lf_template)
            base = model
        if not leg.error:
            check(leg, trained, base, work)
        print(f"  {tool}: done in {time.perf_counter() - started:.0f} s (log in {work})",
              flush=True)
        legs.append(leg)
    print(report(legs, per_epoch, len(rows), args.max_steps))
    if any(leg.error for leg in legs):
        sys.exit(1)


if __name__ == "__main__":
    main()
