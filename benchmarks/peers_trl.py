"""The quickstart job as a plain TRL script: what a user would write without ftp.

    python benchmarks/peers_trl.py --model FOLDER --data ROWS.jsonl --out DIR [--bf16]
        [--epochs 3] [--learning-rate 1e-3] [--batch-size 8] [--rank 16] [--alpha 32]
        [--max-steps N] [--seed 42]

ROWS.jsonl holds conversational prompt/completion rows (``{"prompt": [user message],
"completion": [assistant message]}``), so TRL trains on the completion's tokens only (its
default for that shape). LoRA on every linear layer, AdamW, linear schedule, no warmup, as
ftp's defaults. The merged model and tokenizer are saved to DIR/model; the last line printed
is JSON with the trainer's ``train_runtime`` in seconds and the steps taken.
``benchmarks/peers.py`` runs it next to ftp and LLaMA-Factory.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    """Train, merge, save; print the training time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a local model folder")
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--alpha", type=int, default=32)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (as ftp decides)")
    args = parser.parse_args()

    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    on_gpu = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(
        args.model, dtype=torch.bfloat16 if on_gpu and args.bf16 else torch.float32)
    if on_gpu:
        model = model.to("cuda")
    data = load_dataset("json", data_files=str(args.data), split="train")
    config = SFTConfig(
        output_dir=str(args.out / "checkpoints"),
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size,
        lr_scheduler_type="linear",
        bf16=args.bf16,
        use_cpu=not on_gpu,
        seed=args.seed,
        save_strategy="no",
        report_to="none",
        logging_steps=5,
        max_length=1024,
    )
    lora = LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0,
                      target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=config, train_dataset=data,
                         processing_class=tokenizer, peft_config=lora)
    result = trainer.train()
    merged = trainer.model.merge_and_unload()
    merged.save_pretrained(str(args.out / "model"))
    tokenizer.save_pretrained(str(args.out / "model"))
    print(json.dumps({"train_runtime": result.metrics["train_runtime"],
                      "steps": result.global_step}))


if __name__ == "__main__":
    main()
