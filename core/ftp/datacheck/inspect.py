"""``ftp data inspect``: a quality report for each dataset of a pipeline.

Per dataset: rows read and skipped (by reason; inspection reads with ``on_bad_rows = "skip"``
so that one bad row does not hide the rest of the report), empty fields, exact and near
duplicates (``ftp.datacheck.dedup``), train/held-out overlap (leakage) within the dataset and
between a stage's training data and the data its evaluations score, of whole rows and of
prompts alone (`prompt_text`), token length percentiles and a histogram, rows truncated at the
method's ``max_length``, label balance, conversations that do not end with an assistant turn,
and assistant turns marked untrained (``weight: 0``). Written as ``report.md``,
``report.json`` and one ``lengths-NAME.png`` per dataset.

At any size, row counts, skips, empty fields, exact duplicates and exact leakage are counted
over every row (texts hashed one at a time to 8 bytes each, `short_hash`; neither the texts
nor the raw rows are all held at once: the raw rows are streamed, `ftp.data.RecordStream`,
counted as they are read and let go once formatted; the formatted rows are held packed,
`ftp.packedrows`, ~1 KB a row of generated alpaca data, past 32 MiB in a temporary file).
Above `SAMPLE_ROWS` rows, what costs per row far more — tokenizing through the chat template,
near-duplicate signatures — is estimated from a seeded sample of `SAMPLE_ROWS` rows: token length
percentiles, the total and the truncated and dropped rows (scaled to the whole), near
duplicates and near leakage (found among the sample: a lower bound). The report says so
(``sampled``), so a number is never taken for exact when it is not.
"""

from __future__ import annotations

import dataclasses
import json
import random
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

from ftp.components import Shape
from ftp.config import Dataset, Pipeline
from ftp.data import Prepared, prepare, stream_records
from ftp.datacheck.common import Target, record_text, tokenize_examples
from ftp.datacheck.dedup import near_duplicates, near_matches, normalise, short_hash
from ftp.packedrows import PackedRows
from ftp.turns import untrained_turns

PERCENTILES = (50, 90, 95, 99)
#: Role values that count as the model's own turn when a raw conversation's last turn is read.
ASSISTANT_ROLES = frozenset({"assistant", "gpt", "model", "bot", "function_call"})
EXAMPLES = 5  # duplicate / leakage examples kept in the report
SAMPLE_ROWS = 20_000
"""Above this many rows, token lengths and near duplicates come from a sample of this many."""


class Texts(Sequence[str]):
    """The `record_text` of each row, made when asked for: a million rows' texts never coexist."""

    def __init__(self, rows: Sequence[dict[str, Any]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [record_text(r) for r in self.rows[index]]
        return record_text(self.rows[index])

    def __iter__(self) -> Iterator[str]:
        return (record_text(r) for r in self.rows)


class RowNames(Sequence[str]):
    """``train 0`` … ``eval 0`` …: the name of each row of train + eval, made when asked for."""

    def __init__(self, train: int, held_out: int) -> None:
        self.train, self.held_out = train, held_out

    def __len__(self) -> int:
        return self.train + self.held_out

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not 0 <= index < len(self):
            raise IndexError(index)
        return f"train {index}" if index < self.train else f"eval {index - self.train}"


def sample_indices(n: int, seed: int, size: int | None = None) -> list[int] | None:
    """A seeded sample of ``size`` (`SAMPLE_ROWS`) of ``range(n)``, sorted; None if n fits."""
    size = SAMPLE_ROWS if size is None else size
    if n <= size:
        return None
    return sorted(random.Random(seed).sample(range(n), size))


def _skipping(ds: Dataset) -> Dataset:
    """The dataset read with ``on_bad_rows = "skip"``, where the installed ftp supports it."""
    if "on_bad_rows" not in type(ds.section).model_fields:
        return ds
    return dataclasses.replace(ds, section=ds.section.model_copy(update={"on_bad_rows": "skip"}))


def empty_fields(records: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Per field, rows where it is missing-valued: None, blank text, or an empty list/dict.

    Lists of dicts (conversation turns) are looked into: ``conversations[].value`` counts the
    rows with at least one blank turn.
    """
    tally = RawTally()
    for record in records:
        tally.add(record)
    return tally.empty_fields()


class RawTally:
    """What inspect counts on raw rows (`empty_fields`, `unfinished_conversations`).

    A row at a time: given to `ftp.data.RecordStream.watchers`, it sees each row as read.
    """

    def __init__(self) -> None:
        self.empty: Counter[str] = Counter()
        self.unfinished = 0

    def add(self, record: dict[str, Any]) -> None:
        """Count one raw row."""
        seen: set[str] = set()
        for key, value in record.items():
            if _blank(value):
                seen.add(key)
            elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                for turn in value:
                    for sub, inner in turn.items():
                        if _blank(inner):
                            seen.add(f"{key}[].{sub}")
        self.empty.update(seen)
        self.unfinished += _unfinished(record)

    def empty_fields(self) -> dict[str, int]:
        """Per field, the rows counted where it is missing-valued, by field name."""
        return dict(sorted(self.empty.items()))


def _blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, list | dict) and not value


def unfinished_conversations(records: Iterable[dict[str, Any]]) -> int:
    """Rows holding a list of turns whose last turn is not the assistant's (raw rows)."""
    return sum(1 for record in records if _unfinished(record))


def _unfinished(record: dict[str, Any]) -> bool:
    for value in record.values():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            role = value[-1].get("role", value[-1].get("from"))
            if isinstance(role, str):
                return role.lower() not in ASSISTANT_ROLES
    return False


def untrained_summary(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Assistant turns marked untrained (``weight: 0``) in formatted rows, and rows with any."""
    turns = marked = 0  # counted as the rows go by: no list a row long
    for row in rows:
        n = untrained_turns(row)
        turns += n
        marked += n > 0
    return {"turns": turns, "rows": marked}


def percentiles(values: list[int]) -> dict[str, float]:
    """p50/p90/p95/p99, min, max and mean of token lengths."""
    import numpy as np

    if not values:
        return {}
    arr = np.asarray(values)
    out = {f"p{p}": float(np.percentile(arr, p)) for p in PERCENTILES}
    out.update(min=float(arr.min()), max=float(arr.max()), mean=round(float(arr.mean()), 1))
    return out


def histogram(values: list[int], path: Path, title: str, limit: int | None) -> None:
    """Write a PNG histogram of token lengths, with the truncation limit as a line."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    ax.hist(values, bins=min(50, max(5, len(set(values)))), color="#4477aa")
    if limit is not None:
        ax.axvline(limit, color="#cc3311", linestyle="--", label=f"max_length {limit}")
        ax.legend()
    ax.set_xlabel("tokens per example")
    ax.set_ylabel("examples")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def label_balance(prepared: Prepared) -> dict[str, int] | None:
    """Counts per label for labelled text, per desirability for unpaired preference."""
    rows = prepared.split("all")
    if prepared.shape == Shape.LABELLED_TEXT:
        return dict(sorted(Counter(str(r["label"]) for r in rows).items()))
    if prepared.shape == Shape.UNPAIRED_PREFERENCE:
        c = Counter("desirable" if r["label"] else "undesirable" for r in rows)
        return dict(sorted(c.items()))
    return None


def duplicates(texts: Sequence[str], names: Sequence[str], seed: int = 0) -> dict[str, Any]:
    """Exact (normalised) duplicate rows and near-duplicate pairs among ``texts``.

    ``names`` says which row each text is (``train 3``, ``eval 0``), for the examples. Exact
    duplicates are counted over every text; near pairs among a seeded sample above
    `SAMPLE_ROWS` texts (``near_sampled`` then says how many were compared).
    """
    dup_groups = _equal_groups(_hashes(texts))
    chosen = sample_indices(len(texts), seed)
    picked = list(range(len(texts))) if chosen is None else chosen
    compared = [texts[i] for i in picked]
    found = near_duplicates(compared)
    near = [dataclasses.replace(p, first=picked[p.first], second=picked[p.second])
            for p in found]
    result = {
        "exact_rows": sum(len(g) - 1 for g in dup_groups),
        "exact_groups": len(dup_groups),
        "exact_examples": [{"rows": [names[i] for i in g], "text": _snippet(texts[g[0]])}
                           for g in dup_groups[:EXAMPLES]],
        "near_pairs": len(near),
        "near_rows": len({p.second for p in near}),
        "near_examples": [{"rows": [names[p.first], names[p.second]],
                           "similarity": p.similarity,
                           "first": _snippet(texts[p.first]), "second": _snippet(texts[p.second])}
                          for p in near[:EXAMPLES]],
    }
    if chosen is not None:
        result["near_sampled"] = len(chosen)
    if found.capped:
        result["near_capped"] = found.capped
    return result


def overlap(held_out: Sequence[str], train: Sequence[str], seed: int = 0) -> dict[str, Any]:
    """Held-out rows that also occur in training: exactly (normalised) or nearly.

    Exact matches are counted over every row. Near ones are looked for between seeded samples
    when there are more than `SAMPLE_ROWS` rows in all (half of it from each side at most):
    then ``near`` is a lower bound and ``near_sampled`` says how many rows were compared.
    """
    import numpy as np

    exact = np.flatnonzero(np.isin(_hashes(held_out), _hashes(train))).tolist()
    big = len(held_out) + len(train) > SAMPLE_ROWS
    half = SAMPLE_ROWS // 2
    held_pick = (sample_indices(len(held_out), seed, half) if big else None) \
        or list(range(len(held_out)))
    train_pick = (sample_indices(len(train), seed + 1, half) if big else None) \
        or list(range(len(train)))
    matches = near_matches([held_out[i] for i in held_pick], [train[i] for i in train_pick])
    near = {held_pick[m.first] for m in matches} - set(exact)
    result: dict[str, Any] = {
        "held_out_rows": len(held_out), "exact": len(exact), "near": len(near),
        "examples": [_snippet(held_out[i]) for i in (exact + sorted(near))[:EXAMPLES]]}
    if big:
        result["near_sampled"] = {"held_out": len(held_pick), "train": len(train_pick)}
    if matches.capped:
        result["near_capped"] = matches.capped
    return result


def _hashes(texts: Iterable[str]) -> Any:
    """Each text's `short_hash`, as a numpy uint64 array: 8 bytes a row, whatever the size."""
    import numpy as np

    return np.fromiter((short_hash(t) for t in texts), dtype=np.uint64)


def _equal_groups(hashes: Any) -> list[list[int]]:
    """Indices of equal hashes, groups of two or more, each sorted, by first index."""
    import numpy as np

    order = np.argsort(hashes, kind="stable")  # equal hashes adjacent, in index order
    ranked = hashes[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    stops = np.r_[starts[1:], len(ranked)].astype(np.int64)
    repeated = stops - starts > 1
    groups = [order[a:b].tolist() for a, b in zip(starts[repeated].tolist(),
                                                   stops[repeated].tolist(), strict=True)]
    return sorted(groups, key=lambda g: g[0])


def prompt_text(record: dict[str, Any]) -> str | None:
    """What a row asks: its prompt's user (and tool) turns, or None for a row without one.

    Preference pairs share their prompt and differ in their answers, so a held-out pair whose
    prompt was trained on is a leak that whole-row comparison misses. System messages are left
    out: a system prompt shared by every row would make every prompt look alike.
    """
    value = record.get("prompt")
    if value is None and isinstance(record.get("messages"), list):
        value = [m for m in record["messages"] if m.get("role") != "assistant"]
    if isinstance(value, list):
        value = [m for m in value if not (isinstance(m, dict) and m.get("role") == "system")]
    text = record_text(value) if value is not None else ""
    return text if text.strip() else None


def prompt_overlap(held_out: Sequence[dict[str, Any]], train: Sequence[dict[str, Any]],
                   seed: int = 0) -> dict[str, Any] | None:
    """`overlap` of the held-out rows' prompts with the training rows' (None: no prompts)."""
    held = _Prompts(_with_prompt(held_out))
    seen = _Prompts(_with_prompt(train))
    if not held or not seen:
        return None
    return overlap(held, seen, seed)


def _with_prompt(rows: Sequence[dict[str, Any]]) -> Sequence[dict[str, Any]]:
    """The rows that have a prompt; packed rows stay packed (a million rows as dicts: GBs)."""
    # int64, 8 bytes a row kept (a list of ints costs ~36)
    keep = array("q", (i for i, r in enumerate(rows) if prompt_text(r) is not None))
    if isinstance(rows, PackedRows):
        return rows.take(keep)
    return [rows[i] for i in keep]


class _Prompts(Texts):
    """The `prompt_text` of rows that have one, made when asked for."""

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [prompt_text(r) or "" for r in self.rows[index]]
        return prompt_text(self.rows[index]) or ""

    def __iter__(self) -> Iterator[str]:
        return (prompt_text(r) or "" for r in self.rows)


def _snippet(text: str, width: int = 80) -> str:
    flat = normalise(text)
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _max_length(target: Target) -> int | None:
    if target.stage is None:
        return None
    value = getattr(target.stage.method.config, "max_length", None)
    return value if isinstance(value, int) else None


def inspect_dataset(pipeline: Pipeline, target: Target, tokenizer: Any, out_dir: Path
                    ) -> tuple[dict[str, Any], Prepared]:
    """The report of one dataset (a JSON-able dict) and its prepared records."""
    ds = _skipping(target.dataset)
    # Streamed: each raw row is counted as it is read, then formatted and let go.
    records = stream_records(ds, pipeline.base_dir, pipeline.seed)
    tally = RawTally()
    streams = [records, *([records.eval_records] if records.eval_records else [])]
    for stream in streams:
        stream.watchers.append(tally.add)
    prepared = prepare(ds, records, pipeline.base_dir, pipeline.seed, consume=True)
    rows_read = sum(stream.count for stream in streams) + sum(records.skipped.values())
    empty = tally.empty_fields()
    unfinished = tally.unfinished
    skipped = dict(getattr(prepared, "skipped", {}) or {})
    rows = prepared.split("all")
    texts = Texts(rows)
    seed = pipeline.seed
    report: dict[str, Any] = {
        "dataset": target.name,
        "format": target.dataset.section.format,
        "shape": prepared.shape,
        "tokenized_by": ({"stage": target.stage.name, "method": target.stage.method.entry.name}
                         if target.stage else None),
        "rows_read": rows_read,
        "rows_skipped": sum(skipped.values()),
        "skipped_reasons": skipped,
        "train_rows": len(prepared.train),
        "eval_rows": len(prepared.eval),
        "empty_fields": empty,
        "duplicates": duplicates(texts, RowNames(len(prepared.train), len(prepared.eval)),
                                 seed),
        # Preference rows end with the user's turn by design (the answers are apart).
        "unfinished_conversations": unfinished
        if prepared.shape == Shape.CONVERSATIONAL else None,
        "labels": label_balance(prepared),
        "untrained_turns": untrained_summary(rows),
        "warnings": list(prepared.warnings),
    }
    if prepared.eval:
        report["leakage"] = {"train/eval": overlap(Texts(prepared.eval),
                                                   Texts(prepared.train), seed)}
        prompts = prompt_overlap(prepared.eval, prepared.train, seed)
        if prompts is not None:
            report["leakage"]["train/eval prompts"] = prompts
    chosen = sample_indices(len(rows), seed)
    report["tokens"] = _tokens(target, tokenizer,
                               rows if chosen is None else [rows[i] for i in chosen], out_dir,
                               len(rows))
    if chosen is not None:
        report["sampled"] = {
            "rows": len(chosen), "of": len(rows), "seed": seed,
            "estimated": ["token lengths", "total tokens", "truncated", "dropped",
                          "near duplicates", "near leakage"]}
    return report, prepared


def _tokens(target: Target, tokenizer: Any, rows: Sequence[dict[str, Any]], out_dir: Path,
            of: int) -> dict[str, Any]:
    """Token lengths of ``rows``, a sample of ``of`` rows (or all of them): counts scaled."""
    examples = tokenize_examples(target, tokenizer, rows)
    limit = _max_length(target)
    if examples is not None:
        lengths = [ex.length for ex in examples]
        result: dict[str, Any] = {
            "how": f"as stage {target.stage.name!r} tokenizes"
            if target.stage else "",
            "truncated": sum(ex.truncated for ex in examples),
            "dropped": sum(ex.dropped for ex in examples),
            "max_length": limit,
        }
    else:
        # No method to ask: the plain text's tokens (no chat template, no truncation).
        lengths = [len(tokenizer(record_text(r), add_special_tokens=True)["input_ids"])
                   for r in rows]
        result = {"how": "plain text, no chat template", "truncated": None, "dropped": None,
                  "max_length": None}
        limit = None
    result["lengths"] = percentiles(lengths)
    result["total"] = int(sum(lengths))
    if rows and of > len(rows):  # a sample: the counts, scaled to every row
        scale = of / len(rows)
        result["total"] = round(result["total"] * scale)
        for key in ("truncated", "dropped"):
            if result[key] is not None:
                result[key] = round(result[key] * scale)
        result["sampled"] = len(rows)
    if lengths:
        png = out_dir / f"lengths-{target.name}.png"
        histogram(lengths, png, f"data {target.name!r}: tokens per example", limit)
        result["histogram"] = png.name
    return result


def cross_leakage(pipeline: Pipeline, prepared: dict[str, Prepared]) -> list[dict[str, Any]]:
    """Rows an evaluation scores that a stage trained on, for each (stage data, eval data)."""
    out = []
    for ev in pipeline.evaluations:
        name = ev.section.data
        if name is None or name not in prepared:
            continue
        held_rows = prepared[name].split(ev.section.split)
        held = Texts(held_rows)
        for stage in pipeline.stages:
            for train_name in stage.datasets:
                if train_name not in prepared or (train_name == name
                                                  and ev.section.split == "eval"):
                    continue  # the same dataset's own split is reported with the dataset
                train_rows = prepared[train_name].train
                result = overlap(held, Texts(train_rows), pipeline.seed)
                prompts = prompt_overlap(held_rows, train_rows, pipeline.seed)
                if prompts is not None:
                    result["prompts"] = prompts
                out.append({"evaluation": ev.name, "eval_data": name,
                            "split": ev.section.split, "stage": stage.name,
                            "train_data": train_name, **result})
    return out


def inspect(pipeline: Pipeline, targets: list[Target], tokenizer: Any, out_dir: Path
            ) -> dict[str, Any]:
    """Inspect ``targets`` and write report.md, report.json and the histograms to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    datasets = []
    prepared: dict[str, Prepared] = {}
    for target in targets:
        report, prepared[target.name] = inspect_dataset(pipeline, target, tokenizer, out_dir)
        datasets.append(report)
    result = {"pipeline": pipeline.name, "source": str(pipeline.source), "datasets": datasets,
              "leakage": cross_leakage(pipeline, prepared)}
    (out_dir / "report.json").write_text(json.dumps(result, indent=2, ensure_ascii=False),
                                         encoding="utf-8")
    (out_dir / "report.md").write_text(markdown(result), encoding="utf-8")
    return result


# -- text ---------------------------------------------------------------------------------------


def _capped(result: dict[str, Any]) -> str:
    """What to say when the near-duplicate search stopped at its candidate budget."""
    if not result.get("near_capped"):
        return ""
    return (f" (near: at least; the search stopped after {result['near_capped']:,} candidate "
            "pairs — the texts share most of their wording)")


def summary_lines(d: dict[str, Any]) -> list[str]:
    """A dataset's report as a few terminal lines."""
    lines = [f"data {d['dataset']!r} ({d['format']} → {d['shape']})"]
    skipped = d["rows_skipped"]
    reasons = ", ".join(f"{n} {r}" for r, n in sorted(d["skipped_reasons"].items(),
                                                      key=lambda kv: -kv[1]))
    lines.append(f"  rows: {d['rows_read']} read, {skipped} skipped"
                 + (f" ({reasons})" if reasons else "")
                 + f"; {d['train_rows']} train / {d['eval_rows']} held out")
    empty = ", ".join(f"{k} {n}" for k, n in d["empty_fields"].items()) or "none"
    lines.append(f"  empty fields: {empty}")
    dup = d["duplicates"]
    lines.append(f"  duplicates: {dup['exact_rows']} exact rows ({dup['exact_groups']} groups), "
                 f"{dup['near_pairs']} near-duplicate pairs"
                 + _capped(dup))
    leak = (d.get("leakage") or {}).get("train/eval")
    if leak:
        lines.append(f"  train/eval leakage: {leak['exact']} exact, {leak['near']} near of "
                     f"{leak['held_out_rows']} held-out rows" + _capped(leak))
    prompts = (d.get("leakage") or {}).get("train/eval prompts")
    if prompts:
        lines.append(f"  train/eval prompt leakage: {prompts['exact']} exact, {prompts['near']} "
                     f"near of {prompts['held_out_rows']} held-out prompts also prompt training "
                     "rows" + _capped(prompts))
    tok = d["tokens"]
    pct = tok["lengths"]
    if pct:
        lines.append(f"  tokens ({tok['how']}): p50 {pct['p50']:.0f}, p90 {pct['p90']:.0f}, "
                     f"p95 {pct['p95']:.0f}, p99 {pct['p99']:.0f}, max {pct['max']:.0f}; "
                     f"{tok['total']} in all")
    if tok["truncated"] is not None and tok["max_length"] is not None:
        lines.append(f"  truncated at max_length {tok['max_length']}: {tok['truncated']} rows"
                     + (f", {tok['dropped']} dropped" if tok["dropped"] else ""))
    if d["labels"] is not None:
        lines.append("  labels: " + ", ".join(f"{k} {n}" for k, n in d["labels"].items()))
    if d["unfinished_conversations"] is not None:
        lines.append("  conversations not ending with an assistant turn: "
                     f"{d['unfinished_conversations']}")
    sampled = d.get("sampled")
    if sampled:
        lines.append(f"  estimated from a seeded sample of {sampled['rows']:,} of "
                     f"{sampled['of']:,} rows: {', '.join(sampled['estimated'])} (near ones "
                     "found in the sample only: a lower bound); every other count is exact")
    lines += [f"  warning: {w}" for w in d.get("warnings") or []]
    untrained = d.get("untrained_turns") or {}
    if untrained.get("turns"):
        lines.append(f"  assistant turns untrained (weight 0): {untrained['turns']} in "
                     f"{untrained['rows']} rows")
    return lines


def leakage_lines(items: list[dict[str, Any]]) -> list[str]:
    """Cross-dataset leakage as terminal lines."""
    lines = []
    for x in items:
        lines.append(f"leakage: evaluation {x['evaluation']!r} scores {x['exact']} exact and "
                     f"{x['near']} near copies of stage {x['stage']!r}'s training rows "
                     f"(data {x['eval_data']!r} {x['split']} vs {x['train_data']!r}, "
                     f"{x['held_out_rows']} rows)")
        p = x.get("prompts")
        if p:
            lines.append(f"leakage: evaluation {x['evaluation']!r} scores {p['exact']} exact "
                         f"and {p['near']} near copies of prompts stage {x['stage']!r} trains "
                         f"on (data {x['eval_data']!r} {x['split']} vs {x['train_data']!r}, "
                         f"{p['held_out_rows']} prompts)")
    return lines


def markdown(result: dict[str, Any]) -> str:
    """The whole report as Markdown."""
    out = [f"# Data report: {result['pipeline']}", "", f"Pipeline: `{result['source']}`", ""]
    for d in result["datasets"]:
        out += [f"## data `{d['dataset']}`", "", "```", *summary_lines(d)[1:], "```", ""]
        tok = d["tokens"]
        if tok["lengths"]:
            out += ["| tokens | " + " | ".join(tok["lengths"]) + " |",
                    "|---|" + "---|" * len(tok["lengths"]),
                    "| | " + " | ".join(f"{v:g}" for v in tok["lengths"].values()) + " |", ""]
        if tok.get("histogram"):
            out += [f"![token lengths]({tok['histogram']})", ""]
        dup = d["duplicates"]
        if dup["exact_examples"] or dup["near_examples"]:
            out += ["Duplicates (rows of the split after shuffling):", ""]
            out += [f"- exact, {', '.join(x['rows'])}: {x['text']}"
                    for x in dup["exact_examples"]]
            out += [f"- near ({x['similarity']}), {' / '.join(x['rows'])}: {x['first']} / "
                    f"{x['second']}" for x in dup["near_examples"]]
            out.append("")
        leak = (d.get("leakage") or {}).get("train/eval")
        if leak and leak["examples"]:
            out += ["Held-out rows also in training:", ""]
            out += [f"- {x}" for x in leak["examples"]] + [""]
        prompts = (d.get("leakage") or {}).get("train/eval prompts")
        if prompts and prompts["examples"]:
            out += ["Held-out prompts also prompting training rows:", ""]
            out += [f"- {x}" for x in prompts["examples"]] + [""]
    if result["leakage"]:
        out += ["## Leakage between training and evaluation data", ""]
        out += [f"- {line.removeprefix('leakage: ')}" for line in leakage_lines(result["leakage"])]
        out.append("")
    return "\n".join(out)
