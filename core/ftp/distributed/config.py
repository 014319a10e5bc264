"""``[distributed]``: how many processes train, on how many machines, with which strategy.

Validated with the rest of the pipeline (every problem at once, with TOML paths). The
combinations that cannot work are refused here, before anything is loaded, with the reason:
the HF Trainer given FSDP or DeepSpeed without a GPU silently trains plain DDP on CPU instead,
and that silent downgrade is the worst outcome, so it is an error. No torch is imported: GPUs
are counted from ``CUDA_VISIBLE_DEVICES`` and the NVIDIA device files.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ftp.errors import Problem

#: One process per node, one node: what a pipeline without ``[distributed]`` runs as.
SINGLE = 1


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DdpOptions(_Table):
    """``[distributed.ddp]``: options of PyTorch's DistributedDataParallel (``ddp_*``)."""

    backend: Literal["nccl", "gloo"] | None = Field(
        None, description="Process-group backend; default nccl on GPUs, gloo on CPU.")
    find_unused_parameters: bool | None = Field(
        None, description="Let DDP tolerate parameters without a gradient (slower).")
    bucket_cap_mb: int | None = Field(None, gt=0, description="Gradient bucket size in MB.")
    broadcast_buffers: bool | None = Field(
        None, description="Broadcast module buffers from rank 0 at every forward.")


class FsdpOptions(_Table):
    """``[distributed.fsdp]``: Fully Sharded Data Parallel (FSDP2), through accelerate."""

    sharding: Literal["full", "shard_grad_op"] = Field(
        "full", description="full: parameters, gradients and optimizer state sharded "
        "(ZeRO-3-like); shard_grad_op: parameters gathered between forward and backward.")
    cpu_offload: bool = Field(False, description="Offload parameters and gradients to CPU.")
    auto_wrap: Literal["transformer", "size", "none"] = Field(
        "transformer", description="Wrap each transformer layer (the model's own list), "
        "modules above min_params, or nothing.")
    min_params: int = Field(100_000_000, gt=0,
                            description="With auto_wrap = 'size': the smallest module wrapped.")
    activation_checkpointing: bool = Field(
        False, description="FSDP's own activation checkpointing: less memory, slower.")


class DeepSpeedOptions(_Table):
    """``[distributed.deepspeed]``: DeepSpeed ZeRO (or ``config = "ds.json"``)."""

    zero_stage: Literal[0, 1, 2, 3] = Field(
        2, description="0: off; 1: optimizer state sharded; 2: and gradients; 3: and weights.")
    offload_optimizer: bool = Field(False, description="Optimizer state in CPU memory.")
    offload_params: bool = Field(False, description="Weights in CPU memory (ZeRO-3 only).")
    config: str | None = Field(
        None, description="A DeepSpeed JSON file to use as it is (relative to the pipeline "
        "file); the other keys of this table must then be left out.")


class DistributedSection(BaseModel):
    """``[distributed]``: processes, machines, rendezvous, strategy; other keys: the launcher's."""

    model_config = ConfigDict(extra="allow")

    strategy: Literal["ddp", "fsdp", "deepspeed"] = Field(
        "ddp", description="ddp: a full copy per process; fsdp or deepspeed: sharded (GPUs).")
    nproc_per_node: int | Literal["auto"] = Field(
        SINGLE, description="Processes per machine; 'auto': one per visible GPU (1 on CPU).")
    nnodes: int = Field(1, ge=1, description="Machines taking part.")
    node_rank: int = Field(0, ge=0, description="This machine's number, 0 .. nnodes-1.")
    rdzv_endpoint: str | None = Field(
        None, description="HOST:PORT of node 0 where the processes meet (needed for nnodes > 1).")
    timeout_minutes: float = Field(
        30.0, gt=0, description="How long a process waits for the others (a barrier, a "
        "collective) before the run fails.")
    launcher: str = Field("torchrun", description="What starts the processes "
                          "(`ftp components launcher`).")
    ddp: DdpOptions = Field(default_factory=lambda: DdpOptions.model_validate({}))
    fsdp: FsdpOptions | None = None
    deepspeed: DeepSpeedOptions | None = None

    @field_validator("nproc_per_node")
    @classmethod
    def _positive(cls, v: Any) -> Any:
        if isinstance(v, int) and v < 1:
            raise ValueError("give a number of processes (1 or more) or 'auto'")
        return v

    @field_validator("rdzv_endpoint")
    @classmethod
    def _endpoint(cls, v: Any) -> Any:
        if v is not None and not re.match(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$", v):
            raise ValueError("give HOST:PORT of node 0, e.g. '10.0.0.1:29500'")
        return v


@dataclass(frozen=True)
class LaunchPlan:
    """What a launcher starts: the processes of this node and how they meet the others.

    Attributes:
        nproc_per_node: Processes on this machine.
        nnodes: Machines.
        node_rank: This machine's number.
        rdzv_endpoint: HOST:PORT of node 0, or None on one machine.
        timeout_minutes: How long a process waits for the others.

    """

    nproc_per_node: int
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None
    timeout_minutes: float = 30.0

    @property
    def world_size(self) -> int:
        """Processes in the whole run."""
        return self.nproc_per_node * self.nnodes


def visible_gpus() -> int:
    """How many CUDA GPUs this process would see, without importing torch.

    The NVIDIA device files say what the machine has; ``CUDA_VISIBLE_DEVICES`` narrows it.
    """
    dev = Path("/dev")
    try:
        present = sum(1 for p in dev.iterdir() if re.fullmatch(r"nvidia\d+", p.name))
    except OSError:
        present = 0
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return present
    items = [x for x in listed.split(",") if x.strip()]
    if any(x.strip().startswith("-") for x in items[:1]):
        return 0  # "-1": every GPU hidden
    return min(len(items), present)


def deepspeed_installed() -> bool:
    """Whether the ``deepspeed`` package can be imported (looked up, not imported)."""
    return importlib.util.find_spec("deepspeed") is not None


def plan_of(section: DistributedSection | None, gpus: int | None = None) -> LaunchPlan:
    """The launch plan of ``section`` (a pipeline without one: one process)."""
    if section is None:
        return LaunchPlan(SINGLE)
    nproc = section.nproc_per_node
    if nproc == "auto":
        found = visible_gpus() if gpus is None else gpus
        nproc = max(found, 1)
    return LaunchPlan(int(nproc), section.nnodes, section.node_rank, section.rdzv_endpoint,
                      section.timeout_minutes)


def problems_with(section: DistributedSection, stages: list[Any], base_dir: Path,
                  gpus: int | None = None, for_gpus: bool = False) -> list[Problem]:
    """The combinations in ``section`` that cannot work, each with its reason.

    Args:
        section: The validated ``[distributed]`` table.
        stages: The pipeline's resolved stages (their adapters and methods).
        base_dir: The pipeline file's folder (a DeepSpeed JSON path is relative to it).
        gpus: Visible GPUs (default: counted with `visible_gpus`).
        for_gpus: Check it as for the GPU machine it is bound for, not this one (a rehearsal
            on CPU, which trains DDP instead and says so): the GPUs here are not counted.

    """
    found: list[Problem] = []
    if not for_gpus:
        gpus = visible_gpus() if gpus is None else gpus
    where = "distributed"
    if section.node_rank >= section.nnodes:
        found.append(Problem(f"{where}.node_rank", f"must be below nnodes = {section.nnodes} "
                             "(machines are numbered from 0)", section.node_rank, True))
    if section.nnodes > 1 and not section.rdzv_endpoint:
        found.append(Problem(f"{where}.rdzv_endpoint", f"nnodes = {section.nnodes} needs the "
                             "HOST:PORT of node 0, where the processes of every machine meet"))
    if isinstance(section.nproc_per_node, int) and gpus and section.nproc_per_node > gpus:
        found.append(Problem(f"{where}.nproc_per_node", f"{gpus} GPU(s) are visible; one "
                             "process per GPU at most (or 'auto')", section.nproc_per_node,
                             True))
    if section.fsdp is not None and section.strategy != "fsdp":
        found.append(Problem(f"{where}.fsdp", f"is read only with strategy = 'fsdp' (the "
                             f"strategy is {section.strategy!r})"))
    if section.deepspeed is not None and section.strategy != "deepspeed":
        found.append(Problem(f"{where}.deepspeed", f"is read only with strategy = 'deepspeed' "
                             f"(the strategy is {section.strategy!r})"))
    if section.strategy in ("fsdp", "deepspeed") and gpus == 0:
        name = "FSDP" if section.strategy == "fsdp" else "DeepSpeed"
        found.append(Problem(f"{where}.strategy", f"{name} needs GPUs and none is visible; on "
                             f"CPU the Trainer would silently train plain DDP instead. Use "
                             "strategy = 'ddp' on CPU"))
    if section.strategy == "deepspeed":
        if not deepspeed_installed():
            found.append(Problem(f"{where}.strategy", "DeepSpeed is not installed: pip install "
                                 "deepspeed (or use strategy = 'fsdp')"))
        ds = section.deepspeed or DeepSpeedOptions.model_validate({})
        found.extend(_deepspeed_problems(ds, stages, base_dir))
    return found


def _deepspeed_problems(ds: DeepSpeedOptions, stages: list[Any],
                        base_dir: Path) -> list[Problem]:
    where = "distributed.deepspeed"
    found: list[Problem] = []
    stage: int = ds.zero_stage
    if ds.config is not None:
        given = ds.model_fields_set - {"config"}
        if given:
            found.append(Problem(f"{where}.{sorted(given)[0]}", "set it in the DeepSpeed JSON "
                                 "file, or leave out `config`: ftp does not merge the two"))
        path = base_dir / ds.config
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError:
            return [*found, Problem(f"{where}.config", f"file not found: {path}")]
        except ValueError as exc:
            return [*found, Problem(f"{where}.config", f"{path} is not valid JSON: {exc}")]
        stage = int((data.get("zero_optimization") or {}).get("stage", 0)) \
            if isinstance(data, dict) else 0
    elif ds.offload_params and ds.zero_stage < 3:
        found.append(Problem(f"{where}.offload_params", "weights can be offloaded only when "
                             f"ZeRO shards them (zero_stage = 3; it is {ds.zero_stage})"))
    if stage == 3:
        for stage_ in stages:
            if stage_.adapter is not None:
                found.append(Problem(f"stages[{stage_.index}].adapter", "ZeRO-3 shards the "
                                     "base weights, and ftp merges the adapter into whole "
                                     "weights after the stage: use zero_stage = 2 (or FSDP) "
                                     "with an adapter"))
            elif not getattr(stage_.method.cls, "zero3", True):
                found.append(Problem(f"stages[{stage_.index}].method",
                                     f"method {stage_.method.entry.name!r} cannot train under "
                                     "ZeRO-3 (it says so); use zero_stage = 2"))
    return found
