"""Write N rows of generated instruction data as JSON Lines (alpaca columns), for data_scale.py.

    python benchmarks/make_big_data.py ROWS OUT.jsonl [--seed 0]

Rows are made from word lists by a seeded generator: an instruction, sometimes an input, and
an answer of a few sentences (~0.8 KB a row, so 1,000,000 rows are ~0.8 GB). Every hundredth
row repeats an earlier one, so duplicate checks have something to find. Written one row at a
time: memory stays flat whatever ROWS is. The output is data, not code: never commit it.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

TOPICS = ["the water cycle", "photosynthesis", "compound interest", "a sourdough starter",
          "the French revolution", "binary search", "plate tectonics", "vaccines", "jazz",
          "the moon landing", "recycling", "neural networks", "volcanoes", "chess openings",
          "the stock market", "bees", "black holes", "climate", "the printing press", "tea"]
TASKS = ["Explain {t} to a ten-year-old.", "Write three facts about {t}.",
         "Summarise the text below about {t}.", "What is the most surprising thing about {t}?",
         "Give a short history of {t}.", "List common mistakes people make about {t}.",
         "Compare {t} with something from everyday life.", "Write a haiku about {t}."]
_WORD_TEXT = ("time year people way day man thing woman life child world school state family "
         "student group country problem hand part place case week company system program "
         "question work government number night point home water room mother area money "
         "story fact month lot right study book eye job word business issue side kind head "
         "house service friend father power hour game line end member law car city name "
         "team minute idea kid body information back parent face others level office door "
         "health person art war history party result change morning reason research girl "
         "guy moment air teacher force education")
WORDS = _WORD_TEXT.split()


def sentence(rng: random.Random) -> str:
    """One sentence of 8-20 random words."""
    words = [rng.choice(WORDS) for _ in range(rng.randint(8, 20))]
    return words[0].capitalize() + " " + " ".join(words[1:]) + "."


def row(rng: random.Random) -> dict[str, str]:
    """One generated instruction row."""
    topic = rng.choice(TOPICS)
    task = rng.choice(TASKS).format(t=topic)
    extra = " ".join(sentence(rng) for _ in range(rng.randint(1, 4))) \
        if "text below" in task or rng.random() < 0.2 else ""
    answer = " ".join(sentence(rng) for _ in range(rng.randint(3, 12)))
    return {"instruction": task, "input": extra, "output": answer}


def write(rows: int, out: Path, seed: int = 0) -> int:
    """Write ``rows`` rows to ``out``; return the bytes written."""
    rng = random.Random(seed)
    recent: list[str] = []
    size = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for i in range(rows):
            if i % 100 == 99 and recent:
                line = rng.choice(recent)  # an exact duplicate of a recent row
            else:
                line = json.dumps(row(rng), ensure_ascii=False) + "\n"
                recent = (recent + [line])[-50:]
            f.write(line)
            size += len(line.encode("utf-8"))
    return size


def main() -> None:
    """Parse the command line and write the file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", type=int)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    size = write(args.rows, args.out, args.seed)
    print(f"{args.rows:,} rows, {size / 2**20:,.1f} MiB → {args.out}")


if __name__ == "__main__":
    main()
