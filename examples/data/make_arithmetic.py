"""Write the arithmetic prompts of examples/grpo.toml: questions with a checkable answer.

Each row is ``{"question": "What is 7 + 12?", "answer": "19"}``; the GRPO example asks for the
answer inside ``<answer></answer>`` and rewards the format and the number. Sums and differences
of numbers from 0 to 20, every (a, op, b) at most once; held-out rows share no question with
the training rows. Seeded: rerunning writes the same files.

    python examples/data/make_arithmetic.py      # writes arithmetic_{train,eval}.jsonl here
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 13
TRAIN, EVAL = 400, 60
HERE = Path(__file__).parent


def questions() -> list[dict[str, str]]:
    """Every question of the task, once: a + b, and a - b with a >= b (no negatives)."""
    rows = []
    for a in range(21):
        for b in range(21):
            rows.append({"question": f"What is {a} + {b}?", "answer": str(a + b)})
            if a >= b:
                rows.append({"question": f"What is {a} - {b}?", "answer": str(a - b)})
    return rows


def main() -> None:
    """Shuffle with the seed, split, and write both files."""
    rows = questions()
    random.Random(SEED).shuffle(rows)
    for name, part in (("train", rows[:TRAIN]), ("eval", rows[TRAIN:TRAIN + EVAL])):
        path = HERE / f"arithmetic_{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
        print(f"{path}: {len(part)} rows")


if __name__ == "__main__":
    main()
