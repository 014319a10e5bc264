"""Tokenizing alpaca_en_demo.json for SFT with SmolLM2's tokenizer: cold, then from the cache.

    python benchmarks/tokenize_cache.py [--data PATH] [--repeat N]

Runs the SFT method's own tokenization path (`SFT._tokenize`: the records formatted by the
``alpaca`` format, rendered by SmolLM2's chat template, loss masks, truncation) against an
empty temporary cache directory, then again against the entry the first run wrote. Prints
rows/s for each and the cached/cold time ratio. Each figure is the best of ``--repeat`` runs
(every cold run starts from an empty cache).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "examples" / "data" / "alpaca_en_demo.json"


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from ftp import TrainContext
    from ftp_builtin.formats.chat import Alpaca
    from ftp_builtin.methods.sft import SFT
    from ftp_builtin.models import HFProvider

    tokenizer = HFProvider(HFProvider.Config(path="smollm2-135m-instruct")).load_tokenizer()
    fmt = Alpaca()
    records = [fmt.convert(r) for r in json.loads(args.data.read_text(encoding="utf-8"))]
    method = SFT(SFT.Config())  # max_length 1024, assistant-only loss: the defaults

    def run() -> tuple[float, bool, int]:
        ctx = TrainContext(stage="sft", model=None, tokenizer=tokenizer, provider=None,
                           train=records, eval=None, adapter=None, output_dir=Path("."),
                           seed=0)
        start = time.perf_counter()
        result, hit = method._tokenize(ctx, "train", records)
        return time.perf_counter() - start, hit, result.tokens

    cold, warm = [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="ftp-bench-cache-") as folder:
            os.environ["FTP_TOKENIZED_CACHE_DIR"] = folder
            took, hit, tokens = run()
            assert not hit, "a cold run found an entry in an empty cache"
            cold.append(took)
            took, hit, cached_tokens = run()
            assert hit and cached_tokens == tokens, "the second run did not reuse the entry"
            warm.append(took)
    n = len(records)
    c, w = min(cold), min(warm)
    print(f"data: {args.data} ({n} rows, {tokens} tokens), tokenizer smollm2-135m-instruct, "
          f"best of {args.repeat}")
    print(f"cold:   {c:7.3f} s  {n / c:10.0f} rows/s")
    print(f"cached: {w:7.3f} s  {n / w:10.0f} rows/s")
    print(f"cached/cold time ratio: {w / c:.4f} ({c / w:.0f}x faster)")


if __name__ == "__main__":
    main()
