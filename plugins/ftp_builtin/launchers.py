"""The built-in launcher: PyTorch's elastic launcher, ``torch.distributed.run`` (torchrun)."""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

from ftp import Launcher, RanksStopped, hookimpl
from ftp.distributed.config import LaunchPlan
from ftp.distributed.ranks import LAUNCHED_ENV


class Torchrun(Launcher):
    """PyTorch's torchrun, run inside this process: one node's processes, watched together."""

    name = "torchrun"

    def launch(self, plan: LaunchPlan, args: list[str]) -> int:
        """Run ``python -m ftp ARGS`` in each of this node's processes; stop all if one dies."""
        # The elastic agent's INFO/WARNING lines (rendezvous, "sending SIGTERM") are its
        # business; ftp says what happened in one line.
        import torch.distributed.run  # noqa: F401 — its loggers exist from here on
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
        from torch.distributed.run import parse_args, run

        for name in list(logging.root.manager.loggerDict):
            if name.startswith("torch.distributed"):
                logging.getLogger(name).setLevel(logging.CRITICAL)
        os.environ[LAUNCHED_ENV] = "1"
        try:
            options = parse_args([*torchrun_args(plan), "--module", "ftp"])
            # Set after parsing: ftp's own options (--nproc) would read as torchrun's.
            options.training_script_args = list(args)
            run(options)
        except ChildFailedError as exc:
            rank, failure = cause(exc.failures)
            if failure.exitcode < 0:
                raise RanksStopped(f"rank {rank} was killed by {failure.signal_name()}; all "
                                   "processes were stopped") from None
            return int(failure.exitcode)
        return 0


def cause(failures: dict[int, Any]) -> tuple[int, Any]:
    """The rank whose failure stopped the run, and that failure (torch's ProcessFailure).

    A process killed by a signal is the cause, and the others failed because it died; but the
    agent itself stops the survivors with SIGTERM once one process exits with an error (a
    user mistake in rank 0 while rank 1 waits at a barrier), so a SIGTERM is the cause only
    when no process failed on its own.
    """
    killed = {r: f for r, f in failures.items() if f.exitcode < 0}
    own = {r: f for r, f in failures.items() if f.exitcode > 0}
    signalled = {r: f for r, f in killed.items() if f.exitcode != -signal.SIGTERM}
    chosen = signalled or own or killed or failures
    return min(chosen.items(), key=lambda item: item[1].timestamp)


def torchrun_args(plan: LaunchPlan) -> list[str]:
    """The torchrun command-line options for ``plan`` (no restarts: a failed run is resumed)."""
    common = [f"--nproc-per-node={plan.nproc_per_node}", "--max-restarts=0"]
    if plan.nnodes == 1:
        return ["--standalone", *common]
    # The static rendezvous keeps node_rank as given: node 0's first process is rank 0, the
    # one that writes the run folder.
    return [*common, f"--nnodes={plan.nnodes}", f"--node-rank={plan.node_rank}",
            "--rdzv-backend=static", f"--rdzv-endpoint={plan.rdzv_endpoint}",
            f"--rdzv-conf=timeout={round(plan.timeout_minutes * 60)}"]


@hookimpl
def ftp_launchers() -> list[type[Any]]:
    """Register the built-in launcher."""
    return [Torchrun]
