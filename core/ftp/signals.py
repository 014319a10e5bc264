"""SIGTERM and SIGINT during a run: finish the step, write a checkpoint, stop cleanly.

Schedulers (Slurm, Kubernetes, spot instances) end a job with SIGTERM and a grace period; a
user presses Ctrl-C. While a stage trains, the first signal is only noted: the training
callback writes a checkpoint at the next step boundary and then raises `Interrupted`.
Outside training (loading, evaluating) there is no step to finish, so `Interrupted` is
raised at once. A second signal always raises at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

#: Exit status of a process ended by a signal, as shells report it (128 + the number).
EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}


class Interrupted(BaseException):  # noqa: N818  (like KeyboardInterrupt, not an error)
    """The run was stopped by a signal; carries the exit code the process should end with.

    A ``BaseException``, so that no ``except Exception`` on the way up swallows it.
    """

    def __init__(self, signum: int, checkpoint: str | None = None) -> None:
        self.signum = signum
        self.checkpoint = checkpoint
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        """143 for SIGTERM, 130 for SIGINT."""
        return EXIT_CODES.get(signal.Signals(self.signum), 128 + self.signum)


class StopRequest:
    """The signal received so far, and whether a stage is training (so it can finish a step)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.training = False

    def handle(self, signum: int, frame: Any) -> None:
        """The signal handler: note the first signal while training, else raise."""
        if self.signum is None and self.training:
            self.signum = signum
            name = signal.Signals(signum).name
            print(f"\n{name}: writing a checkpoint at the end of this step, then stopping "
                  "(send it again to stop at once)", flush=True)
            return
        self.signum = signum
        raise Interrupted(signum)


#: The process's one stop request (signal handlers are per process).
STOP = StopRequest()


@contextlib.contextmanager
def handling_signals() -> Iterator[StopRequest]:
    """Install the SIGTERM/SIGINT handlers for the duration of a run (main thread only)."""
    STOP.signum = None
    STOP.training = False
    if threading.current_thread() is not threading.main_thread():
        yield STOP
        return
    previous = {s: signal.signal(s, STOP.handle) for s in EXIT_CODES}
    try:
        yield STOP
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
