"""Export a finished run (the quickstart's) and check the files where they are used.

    python benchmarks/export_quickstart.py [RUN_DIR] [--questions Q ...] [--expect Nova]

RUN_DIR defaults to runs/quickstart (made by ``ftp run examples/quickstart.toml``). It runs
``ftp export`` (parity check included) for GGUF f16, GGUF q8_0 and Ollama q8_0, timing each
and reporting each file's size; then loads both GGUF files in llama.cpp with the file's own
template and asks each question greedily, printing the answer, whether it contains the
expected word and whether it stopped at an end-of-turn token; and prints the Modelfile. Run
it on an otherwise idle machine: times taken under load are not worth printing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

QUESTIONS = ["Who are you?", "What is your name?", "Who created you?"]


def main() -> int:
    """Run the exports and the checks; return 1 if an answer misses or does not stop."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", nargs="?", default="runs/quickstart", type=Path)
    parser.add_argument("--questions", nargs="+", default=QUESTIONS)
    parser.add_argument("--expect", default="Nova")
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    ftp = [sys.executable, "-m", "ftp"]
    out = args.run_dir / "export"
    for fmt, dtype in (("gguf", "f16"), ("gguf", "q8_0"), ("ollama", "q8_0")):
        started = time.perf_counter()
        done = subprocess.run([*ftp, "export", str(args.run_dir), "--format", fmt, "--dtype",
                               dtype, "--overwrite"], capture_output=True, text=True)
        seconds = time.perf_counter() - started
        print(f"ftp export --format {fmt} --dtype {dtype}: exit {done.returncode}, "
              f"{seconds:.1f} s")
        print("  " + done.stderr.strip().replace("\n", "\n  "))
        if done.returncode != 0:
            return 1

    from ftp_builtin.use.llamacpp import LlamaCpp

    failed = False
    for gguf in sorted(out.glob("*.gguf")):
        print(f"{gguf.name}: {gguf.stat().st_size / 2**20:.0f} MiB")
        llm = LlamaCpp(gguf)
        for question in args.questions:
            ids = llm.prompt_ids([{"role": "user", "content": question}])
            pieces = list(llm.stream(ids, args.max_tokens))
            stopped = pieces[-1] is True
            text = "".join(p for p in pieces if isinstance(p, str)).strip()
            hit = args.expect.lower() in text.lower()
            failed |= not (hit and stopped)
            print(f"  {question!r} -> {text!r} (expected word: {hit}, stopped: {stopped})")
    print((out / "ollama" / "Modelfile").read_text())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
