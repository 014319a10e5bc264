"""Who this process is in a distributed run, and where it waits for the others.

The runner asks `here` (rank, world size, local rank, is it the main process) and waits with
`barrier`, `main_first`, `agree` and `share`. In one process every one of them is free and
imports nothing; torch is imported only when there are several processes.

The launchers (torchrun, srun, accelerate launch, ftp's own relaunch) describe the process in
the environment: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from ftp.errors import RunError

T = TypeVar("T")

#: Set by ftp's own launch in the processes it starts: ftp reports a dead process itself.
LAUNCHED_ENV = "FTP_LAUNCHED"
#: How gloo and NCCL say that another process went away.
_PEER_GONE = ("closed by peer", "reset by peer", "remote worker", "broken pipe",
              "nccl communicator was aborted")


@dataclass(frozen=True)
class Place:
    """A process's place in the run.

    Attributes:
        rank: Its number among all processes (0 is the main one).
        world_size: Processes in the run.
        local_rank: Its number on this machine.
        local_world_size: Processes on this machine.

    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes, prints, evaluates and saves."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether other processes train with this one."""
        return self.world_size > 1


def launched() -> bool:
    """Whether a launcher started this process (torchrun, srun + env, accelerate launch)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def here() -> Place:
    """The current process's place, from the launcher's environment (one process without one)."""
    if not launched():
        return Place()
    world = int(os.environ["WORLD_SIZE"])
    return Place(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")),
                 int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))


def peer_lost(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says another process of the run went away."""
    seen: BaseException | None = exc
    while seen is not None:
        text = str(seen).lower()
        if any(sign in text for sign in _PEER_GONE) or type(seen).__name__ in (
                "DistBackendError", "DistNetworkError"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def reported_by_launcher(exc: BaseException) -> bool:
    """Whether ftp's launcher will report ``exc`` better: another process died first."""
    return bool(os.environ.get(LAUNCHED_ENV)) and here().distributed and peer_lost(exc)


def threads_per_process() -> int:
    """CPU threads for each process on this machine: its cores shared out evenly."""
    return max(1, (os.cpu_count() or 1) // here().local_world_size)


def start(timeout_minutes: float) -> None:
    """Join the process group (gloo on CPU, nccl on GPUs), unless alone or already in one.

    The Trainer later finds the group already made and uses it, with this timeout.
    """
    place = here()
    if not place.distributed:
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    on_gpu = torch.cuda.is_available()
    if on_gpu:
        torch.cuda.set_device(place.local_rank)
    dist.init_process_group("nccl" if on_gpu else "gloo",
                            timeout=timedelta(minutes=timeout_minutes))


def finish() -> None:
    """Leave the process group (so the processes exit without the library's warnings)."""
    if not here().distributed:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _group() -> Any:
    """torch.distributed when this process is in a group of several, else None."""
    if not here().distributed:
        return None
    import torch.distributed as dist

    return dist if dist.is_initialized() else None


def barrier(where: str) -> None:
    """Wait until every process reaches this point (within the group's timeout).

    Raises:
        RunError: when another process did not come in time or died, naming ``where``.

    """
    dist = _group()
    if dist is None:
        return
    try:
        dist.barrier()
    except Exception as exc:  # noqa: BLE001 — any failure of a peer is one message
        text = str(exc).strip().splitlines()
        raise RunError(f"rank {here().rank} waited for the other processes at {where} in "
                       f"vain: {text[0] if text else type(exc).__name__}") from exc


@contextlib.contextmanager
def main_first(where: str) -> Iterator[None]:
    """Run the block in the main process first, then in the others (which wait for it).

    For work that fills a shared cache (a download, tokenized data): the main process does
    it, the others find it done.
    """
    if not here().is_main:
        barrier(where)
    yield
    if here().is_main:
        barrier(where)


def agree(flag: bool) -> bool:
    """True on every process when it is true on any (one collective; free when alone)."""
    dist = _group()
    if dist is None:
        return flag
    import torch

    value = torch.tensor([1 if flag else 0])
    if dist.get_backend() == "nccl":
        value = value.cuda()  # nccl reduces GPU tensors only
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def share(value: T) -> T:
    """The main process's ``value``, on every process (free when alone)."""
    dist = _group()
    if dist is None:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
