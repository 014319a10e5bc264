"""Deciding whether ``ftp run`` launches its processes, and launching them.

With more than one process and no launcher around it, ``ftp run`` hands its own command line
to the pipeline's launcher (``[distributed] launcher``, the built-in ``torchrun``): every
process runs ``python -m ftp ARGS`` again and, finding RANK and WORLD_SIZE set, trains instead
of launching. Started by hand under torchrun, srun or accelerate launch, it never launches.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ftp.distributed.config import LaunchPlan, plan_of
from ftp.distributed.ranks import launched

if TYPE_CHECKING:
    from ftp.config import Pipeline


def plan_for(pipeline: Pipeline) -> LaunchPlan | None:
    """The plan to launch ``pipeline`` with, or None when this process trains it itself."""
    if launched():
        return None
    plan = plan_of(pipeline.distributed)
    return plan if plan.world_size > 1 else None


def threads_env(plan: LaunchPlan) -> dict[str, str]:
    """OMP_NUM_THREADS for the launched processes: this machine's cores shared out evenly.

    torchrun would otherwise give each process one thread; a value the user set is kept.
    """
    if "OMP_NUM_THREADS" in os.environ:
        return {}
    return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // plan.nproc_per_node))}


def launch(pipeline: Pipeline, args: list[str]) -> int:
    """Start ``pipeline``'s processes on this node with ftp's command line ``args``.

    Returns:
        0, or the exit code of the first process that failed.

    Raises:
        ftp.errors.RanksStopped: a process was killed; the others were stopped.

    """
    plan = plan_of(pipeline.distributed)
    if pipeline.launcher is None:  # --nproc alone is validated as a [distributed] table too
        raise AssertionError("a pipeline that launches has a [distributed] table")
    os.environ.update(threads_env(plan))
    return int(pipeline.launcher.build().launch(plan, args))
