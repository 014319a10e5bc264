"""The same SFT job under glibc's malloc and under jemalloc, each in a child process of its own.

    python benchmarks/allocator.py [--steps N] [--batch 8] [--legs glibc,jemalloc,...]

The job is examples/quickstart.toml's stage, run by hand: SmolLM2-135M-Instruct (offline
catalog) in float32, LoRA r16 alpha 32 on every linear layer, AdamW at 1e-3, padding-free
batches of ``--batch`` conversations of examples/data/identity.json (placeholders filled), so
every step has a different length, as real batches do; loss on the answers only, as ftp
computes it. Per allocator (``glibc``: nothing preloaded, ``FTP_ALLOCATOR=system``;
``jemalloc``: preloaded, as ``ftp run`` does where it is installed) this prints:

- training tokens/s over the steps after the first two (warm-up left out);
- peak RSS: the child's ``ru_maxrss`` from ``wait4`` (the whole process, loading included);
- the allocator the child really ran on (its memory maps, `ftp.allocator.current`);

and each leg's ratios against the first. A leg ``jemalloc:CONF`` runs jemalloc with
``MALLOC_CONF=CONF`` (e.g. ``jemalloc:dirty_decay_ms:0,muzzy_decay_ms:0`` returns freed pages
at once; ``jemalloc:narenas:1`` one arena for every thread), to try its settings.

With ``--steps 3`` it is a smoke test whose figures mean nothing; run the real thing (the
default, 40 steps) on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

WARMUP = 2  # steps left out of tokens/s: the first allocations and lazy initialisation
MARK = "allocator-benchmark: "


def child(steps: int, batch: int) -> None:
    """Train ``steps`` steps here; print one JSON line: allocator, tokens and seconds timed."""
    import torch
    from memory_profile import batches  # the quickstart's rows, padding-free, as ftp trains
    from peers import model_folder
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftp.allocator import current
    from ftp.gated_mlp import lean_gated_mlps
    from ftp_builtin.methods.common import loss_on_labelled_positions

    torch.manual_seed(0)
    folder = model_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    model.train()
    lean_gated_mlps(model).__enter__()  # as ftp run trains, until the process ends
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    data = batches(tokenizer, batch)
    tokens, started = 0, time.perf_counter()
    for i in range(steps):
        if i == WARMUP:
            tokens, started = 0, time.perf_counter()
        step = data[i % len(data)]
        loss = loss_on_labelled_positions(model, step)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        tokens += step["input_ids"].numel()
    seconds = time.perf_counter() - started
    print(MARK + json.dumps({"allocator": current().name, "tokens": tokens,
                             "seconds": seconds, "timed_steps": max(steps - WARMUP, 0)}),
          flush=True)


def run_leg(name: str, steps: int, batch: int, log: Path) -> dict[str, float | str]:
    """Run `child` under allocator ``name``; its figures and peak RSS in MB (wait4).

    ``name``: ``glibc``, ``jemalloc`` or ``jemalloc:CONF`` (CONF as ``MALLOC_CONF``).
    """
    from ftp.allocator import ENV, find_jemalloc

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "LD_PRELOAD": "", ENV: "system"}
    env.pop("MALLOC_CONF", None)
    if name.startswith("jemalloc:"):
        env["MALLOC_CONF"] = name.split(":", 1)[1]
    if name.startswith("jemalloc"):
        library = find_jemalloc()
        if library is None:
            sys.exit("jemalloc not found: apt install libjemalloc2 (or dnf/conda install "
                     "jemalloc)")
        env["LD_PRELOAD"] = library
    cmd = [sys.executable, __file__, "--child", "--steps", str(steps), "--batch", str(batch)]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    text = log.read_text(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0 or MARK not in text:
        sys.exit(f"{name} leg failed (log {log}):\n" + "\n".join(text.splitlines()[-8:]))
    found = json.loads(text.rsplit(MARK, 1)[1].splitlines()[0])
    seconds = found["seconds"]
    return {"leg": name, "allocator": found["allocator"],
            "tokens_per_s": found["tokens"] / seconds if seconds > 0 else 0.0,
            "peak_mb": usage.ru_maxrss / 1024}  # Linux reports KiB


def main() -> None:
    """Parse the command line; run each allocator in turn; print the table and the ratios."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="training steps (default 40)")
    parser.add_argument("--batch", type=int, default=8, help="conversations a step (default 8)")
    parser.add_argument("--workdir", type=Path, default=Path("runs/allocator-benchmark"),
                        help="where the children's logs go")
    parser.add_argument("--legs", default="glibc,jemalloc",
                        help="allocators to run, comma-separated: glibc, jemalloc, "
                        "jemalloc:MALLOC_CONF (default glibc,jemalloc)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.steps, args.batch)
        return
    if not sys.platform.startswith("linux"):
        sys.exit("allocators are preloaded with LD_PRELOAD: Linux only")
    args.workdir.mkdir(parents=True, exist_ok=True)
    legs = [run_leg(name, args.steps, args.batch, args.workdir / f"leg{i}.log")
            for i, name in enumerate(split_legs(args.legs))]
    print(f"{args.steps} steps ({max(args.steps - WARMUP, 0)} timed), batch {args.batch}, "
          "SmolLM2-135M float32, LoRA r16 all-linear")
    width = max(len(str(leg["leg"])) for leg in legs) + 2
    print(f"{'leg':<{width}} {'really ran on':<14} {'tokens/s':>9} {'peak RSS':>10}  vs first")
    first = legs[0]
    for leg in legs:
        speed = (float(leg["tokens_per_s"]) / float(first["tokens_per_s"])
                 if first["tokens_per_s"] else float("nan"))
        print(f"{leg['leg']:<{width}} {leg['allocator']:<14} {leg['tokens_per_s']:>9.0f} "
              f"{leg['peak_mb']:>7.0f} MB  tokens/s {speed:.2f}x, peak "
              f"{float(leg['peak_mb']) / float(first['peak_mb']):.2f}x")


def split_legs(text: str) -> list[str]:
    """``glibc,jemalloc:a:1,b:2,jemalloc`` → legs; a CONF's own commas stay in its leg."""
    legs: list[str] = []
    for part in text.split(","):
        if part.startswith(("glibc", "jemalloc")) or not legs:
            legs.append(part)
        else:
            legs[-1] += "," + part
    return legs


if __name__ == "__main__":
    main()
