"""Training in several processes, on one machine or many: ``[distributed]``.

ftp writes no distributed engine. It launches through PyTorch's own elastic launcher
(``torch.distributed.run``) and trains through transformers/accelerate's DDP, FSDP and
DeepSpeed integrations. What lives here:

- `ftp.distributed.config`: the ``[distributed]`` table and the combinations refused at
  validation (no torch imported);
- `ftp.distributed.translate`: the strategy as TrainingArguments options (pure);
- `ftp.distributed.ranks`: who this process is, and where it waits (barriers);
- `ftp.distributed.launch`: re-running ``ftp run`` under the launcher.

See docs/distributed.md.
"""
