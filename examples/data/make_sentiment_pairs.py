"""Write the preference pairs of examples/reward.toml from the SST-2 phrases next to this file.

A reward model learns what a preference says. Here the preference is one a reader can check:
asked for a line of a movie review that makes people want to see the film, a positive phrase is
chosen over a negative one. Each row is ``{"prompt": ..., "chosen": <positive phrase>,
"rejected": <negative phrase>}``; the phrases come unchanged from ``sst2_train.csv`` (training
pairs) and ``sst2_eval.csv`` (held-out pairs), so no phrase is both trained on and held out, and
each phrase is used at most once. Seeded: rerunning writes the same files.

    python examples/data/make_sentiment_pairs.py   # writes sentiment_pairs_{train,eval}.jsonl
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

SEED = 7
PAIRS = {"train": 400, "eval": 100}
PROMPT = "Write one line of a movie review that makes people want to see the film."
HERE = Path(__file__).parent


def pairs(source: Path, count: int, rng: random.Random) -> list[dict[str, str]]:
    """``count`` pairs of a positive (chosen) and a negative (rejected) phrase of ``source``."""
    with source.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    positive = [r["text"] for r in rows if r["label"] == "positive"]
    negative = [r["text"] for r in rows if r["label"] == "negative"]
    rng.shuffle(positive)
    rng.shuffle(negative)
    if min(len(positive), len(negative)) < count:
        raise SystemExit(f"{source}: too few phrases of one label for {count} pairs")
    return [{"prompt": PROMPT, "chosen": p, "rejected": n}
            for p, n in zip(positive[:count], negative[:count], strict=True)]


def main() -> None:
    """Draw the pairs of each split and write them as JSON lines."""
    rng = random.Random(SEED)
    for split, count in PAIRS.items():
        path = HERE / f"sentiment_pairs_{split}.jsonl"
        rows = pairs(HERE / f"sst2_{split}.csv", count, rng)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(f"{path}: {len(rows)} pairs")


if __name__ == "__main__":
    main()
