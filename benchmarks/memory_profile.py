"""Where the quickstart's training memory goes: resident memory by phase, and what one step keeps.

    python benchmarks/memory_profile.py [--steps N] [--batch 8]
    python benchmarks/memory_profile.py --method dpo [--head chunked|logits|trl] [--model DIR]

The job is examples/quickstart.toml's stage (SmolLM2-135M-Instruct, LoRA r16 alpha 32 on every
linear layer, batch 8, padding-free rows, loss on the answers only, ftp's own loss), run by
hand in this process so that each phase can be looked at:

- resident memory (RSS) after importing the libraries, after loading the model, after adding
  LoRA, and the peak over the training steps (``ru_maxrss``), each with the allocator this
  process runs on (a plain ``python`` runs on glibc's malloc; ``LD_PRELOAD=`` a jemalloc
  library to see what ``ftp run`` gets where jemalloc is installed);
- what autograd saves for the backward pass of the largest batch, attributed to the kind of
  module that saved it (attention, MLP, norms, LoRA, the LM head and loss), parameters left
  out: the part of a step's memory that grows with the tokens in a batch.

Nothing is timed: the figures are memory only, so it may run beside other work; the steps
use the real rows of examples/data/identity.json in the order of the file.

``--method dpo`` profiles one step of examples/dpo.toml's stage instead (TRL's DPOTrainer as
ftp builds it: LoRA r16 alpha 32 on every linear layer, the reference by disabling the
adapter, pairs fitted into max_length 384 by keep_end, batch 2): the batch of the two pairs
of examples/data/dpo_en_demo.json with the most tokens, what autograd keeps for its backward by
kind of module, and the peak RSS after the step, for each LM head asked (``--head``, default
all three, in this order): ``chunked`` (ftp now: a plain head applied a chunk of answer
positions at a time), ``logits`` (ftp before: the answer positions' logits whole) and ``trl``
(TRL's own fused head). The peak RSS is the process's, so it only grows from one head to the
next: run one ``--head`` a process to compare peaks.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import resource
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import filled_rows, model_folder, prompt_of  # noqa: E402

MiB = 2**20


def rss_mib() -> float:
    """Resident memory of the process now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / MiB


def peak_mib() -> float:
    """Peak resident memory of the process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def batches(tokenizer: Any, batch: int) -> list[dict[str, Any]]:
    """The quickstart's rows as ftp trains them: padding-free rows of `batch` conversations."""
    import torch

    from ftp.components import IGNORE_INDEX
    from ftp_builtin.tokenize import conversation

    rows = [conversation(tokenizer, [{"role": "user", "content": prompt_of(r)},
                                     {"role": "assistant", "content": r["output"]}])
            for r in filled_rows()]
    out = []
    for start in range(0, len(rows), batch):
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for row in rows[start:start + batch]:
            ids += row["input_ids"]
            # A row's first token predicts nothing from the row before it.
            labels += [IGNORE_INDEX] + row["labels"][1:]
            positions += list(range(len(row["input_ids"])))
        out.append({"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]),
                    "position_ids": torch.tensor([positions])})
    return out


KINDS = (("lora", "lora"), ("attn", "attention"), ("mlp", "MLP"), ("norm", "norms"),
         ("lm_head", "LM head and loss"), ("embed", "embeddings"))


def kind_of(module_name: str) -> str:
    """The kind of module a saved tensor belongs to, from the innermost module's name."""
    lowered = module_name.lower()
    for key, kind in KINDS:
        if key in lowered:
            return kind
    # Outside every submodule, or in the causal LM's own forward (PEFT's wrappers around it):
    # what the head and the loss compute after the last layer.
    whole_model = ("", "base_model", "base_model.model")
    return "LM head and loss" if module_name in whole_model else "other"


def saved_by_kind(model: Any, step: Any) -> tuple[dict[str, float], float]:
    """MiB autograd saves for backward during `step()`, by kind of module; parameters left out."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: set[int] = set()
    by_kind: collections.Counter[str] = collections.Counter()
    stack: list[str] = []

    def enter(name: str) -> Any:
        return lambda *_: stack.append(name)

    def leave(*_: Any) -> None:
        stack.pop()

    handles = []
    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_pre_hook(enter(name)))
            handles.append(module.register_forward_hook(leave))

    def pack(t: Any) -> Any:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in params and ptr not in seen:
            seen.add(ptr)
            by_kind[kind_of(stack[-1] if stack else "")] += storage.nbytes() / MiB
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = step()
    finally:
        for h in handles:
            h.remove()
    loss.backward()
    return dict(by_kind), sum(by_kind.values())


HEADS = ("chunked", "logits", "trl")


def dpo_trainer(folder: str, max_length: int, head: str, pairs: int | None) -> tuple[Any, Any]:
    """examples/dpo.toml's DPO trainer on `folder`'s model with `head`, and its largest batch."""
    import json
    import warnings

    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from ftp_builtin.formats.preference import ShareGPTPreference
    from ftp_builtin.methods import lm_head
    from ftp_builtin.methods.preference import _drop_reference_adapter
    from ftp_builtin.truncation import fit_pair

    examples = Path(__file__).resolve().parent.parent / "examples"
    raw = json.loads((examples / "data" / "dpo_en_demo.json").read_text())[:pairs]
    fmt = ShareGPTPreference(ShareGPTPreference.Config())
    records = [fmt.convert(r) for r in raw]
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    args = DPOConfig(output_dir="/tmp/ftp-memory-profile-dpo", report_to=[], use_cpu=True,
                     per_device_train_batch_size=2, max_length=sys.maxsize, beta=0.1,
                     precompute_ref_log_probs=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(records),
                             processing_class=tokenizer)
    _drop_reference_adapter(trainer.model)
    if head != "trl":
        assert lm_head.use_lean_lm_head(trainer.model), "ftp's lean head does not apply here"
    if head == "logits":
        lm_head.plain_head = lambda model: None  # type: ignore[assignment]  # ftp before chunking
    rows = []
    for row in trainer.train_dataset.to_list():
        fitted = fit_pair(row["prompt_ids"], {a: row[f"{a}_ids"] for a in ("chosen", "rejected")},
                          max_length, "keep_end")
        rows.append({"prompt_ids": list(fitted.prompt),
                     **{f"{a}_ids": list(ids) for a, ids in fitted.answers.items()}})

    def size(row: dict[str, Any]) -> tuple[int, int]:
        answers = len(row["chosen_ids"]) + len(row["rejected_ids"])
        return 2 * len(row["prompt_ids"]) + answers, answers

    largest = sorted(rows, key=size)[-2:]
    return trainer, trainer.data_collator(largest)


def profile_dpo(folder: str, heads: tuple[str, ...], max_length: int, pairs: int | None) -> None:
    """Print what one DPO step keeps for backward, by kind of module, with each head."""
    from ftp_builtin.methods import lm_head

    plain_head = lm_head.plain_head
    for head in heads:
        try:
            dpo_step(folder, head, max_length, pairs)
        finally:
            lm_head.plain_head = plain_head  # type: ignore[assignment]  # the next head's own


def dpo_step(folder: str, head: str, max_length: int, pairs: int | None) -> None:
    """One DPO step with `head`: print what it keeps for backward and the peak RSS so far."""
    from ftp.gated_mlp import lean_gated_mlps

    trainer, batch = dpo_trainer(folder, max_length, head, pairs)
    model = trainer.model
    model.train()
    answers = int(batch["completion_mask"][:, 1:].sum())
    with lean_gated_mlps(model):  # as ftp run trains
        by_kind, total = saved_by_kind(model, lambda: trainer.compute_loss(model, batch))
    rows, length = batch["input_ids"].shape
    print(f"\nDPO step, LM head {head!r}: the largest batch, {rows} sequences of {length} "
          f"tokens, {answers} answer tokens; saved for backward {total:.0f} MiB "
          f"({total * MiB / (rows * length) / 1024:.0f} KiB a token); peak RSS so far "
          f"{peak_mib():.0f} MiB")
    for kind, mib in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:<18} {mib:7.1f} MiB  {100 * mib / total:5.1f}%")


def main() -> None:
    """Print resident memory by phase and the saved activations of the largest batch."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=12, help="training steps (default 12)")
    parser.add_argument("--batch", type=int, default=8, help="conversations a step (default 8)")
    parser.add_argument("--method", choices=("sft", "dpo"), default="sft",
                        help="sft: the quickstart's stage (default); dpo: examples/dpo.toml's")
    parser.add_argument("--head", choices=HEADS, action="append",
                        help="dpo: the LM head to profile (repeat for several; default all)")
    parser.add_argument("--model", help="dpo: a model folder instead of SmolLM2 (a smoke test)")
    parser.add_argument("--max-length", type=int, default=384, help="dpo: as examples/dpo.toml")
    parser.add_argument("--pairs", type=int, help="dpo: only the first N pairs of the file")
    args = parser.parse_args()
    if args.method == "dpo":
        profile_dpo(args.model or model_folder(), tuple(args.head or HEADS), args.max_length,
                    args.pairs)
        return

    from ftp.allocator import current

    print(f"allocator: {current().name}")
    print(f"{'python started':<34} RSS {rss_mib():7.0f} MiB")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftp.gated_mlp import lean_gated_mlps
    from ftp_builtin.methods.common import loss_on_labelled_positions

    torch.manual_seed(0)
    print(f"{'torch, transformers, peft imported':<34} RSS {rss_mib():7.0f} MiB")
    folder = model_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    print(f"{'model loaded (float32)':<34} RSS {rss_mib():7.0f} MiB")
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    print(f"{'LoRA added':<34} RSS {rss_mib():7.0f} MiB")

    data = batches(tokenizer, args.batch)
    before = peak_mib()
    with lean_gated_mlps(model):  # as ftp run trains
        for i in range(args.steps):
            loss = loss_on_labelled_positions(model, data[i % len(data)])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    steps_peak = peak_mib()
    print(f"{f'{args.steps} training steps':<34} RSS {rss_mib():7.0f} MiB, peak {steps_peak:7.0f} "
          f"MiB (+{steps_peak - before:.0f} over the steps)")

    largest = max(data, key=lambda b: b["input_ids"].numel())
    tokens = largest["input_ids"].numel()
    labelled = int((largest["labels"][0, 1:] != -100).sum())
    for mlps in ("the model's own MLPs", "ftp's lean gated MLPs (as ftp run trains)"):
        with lean_gated_mlps(model) if "lean" in mlps else contextlib.nullcontext():
            by_kind, total = saved_by_kind(model,
                                           lambda: loss_on_labelled_positions(model, largest))
        print(f"\nsaved for backward, largest batch ({tokens} tokens, {labelled} labelled), "
              f"{mlps}: {total:.0f} MiB ({total * MiB / tokens / 1024:.0f} KiB a token)")
        for kind, mib in sorted(by_kind.items(), key=lambda kv: -kv[1]):
            print(f"  {kind:<18} {mib:7.1f} MiB  {100 * mib / total:5.1f}%")


if __name__ == "__main__":
    main()
