"""Giving freed host memory back to the operating system between the steps of a run.

glibc keeps memory that Python and torch freed in its heap for later reuse. Training on a CPU
frees and allocates tensors of a different shape at every step (padding-free batches vary in
length), so the heap fragments and a process's resident memory only ever grows: measured on
the quickstart, ~0.95 GB after loading, 1.9-2.2 GB during training and higher still while
saving, with nothing given back in between. `release` collects Python's garbage and asks
glibc to return its free pages (``malloc_trim(0)``); the runner calls it after each
evaluation and at the end of each stage, where large tensors (a trainer, an evaluation's
logits) have just been dropped.

Under jemalloc (`ftp.allocator`: the commands that train switch to it where it is installed)
glibc's heap is not where the memory is, so `release` asks jemalloc instead to purge every
arena (``mallctl("arena.4096.purge")``; 4096 is ``MALLCTL_ARENAS_ALL``): its dirty pages go
back at once rather than after its decay delay. Elsewhere (not Linux, neither allocator) it
only collects garbage. On a GPU the tensors that matter
live in device memory, which torch's caching allocator manages itself, so nothing is trimmed
there.

Nothing here imports torch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import sys
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """Glibc's ``malloc_trim``, or None where the C library has none (macOS, musl, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


# jemalloc's MALLCTL_ARENAS_ALL: "arena.<i>.purge" with this index purges every arena.
_ALL_ARENAS = 4096


@functools.cache
def _jemalloc_purge() -> Callable[[], bool] | None:
    """Purging all of jemalloc's arenas, where this process runs on jemalloc; else None."""
    if not sys.platform.startswith("linux"):
        return None
    from ftp.allocator import current

    if current().name != "jemalloc":
        return None
    try:
        # Preloaded, its symbols are in the process's global namespace.
        mallctl = ctypes.CDLL(None).mallctl
    except (OSError, AttributeError):
        return None
    mallctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                        ctypes.c_size_t]
    mallctl.restype = ctypes.c_int
    name = f"arena.{_ALL_ARENAS}.purge".encode()
    return lambda: mallctl(name, None, None, None, 0) == 0


def can_trim() -> bool:
    """Whether this process's allocator can give free heap memory back (glibc or jemalloc)."""
    return _jemalloc_purge() is not None or _malloc_trim() is not None


def trim() -> bool:
    """Return free heap pages to the operating system.

    Under jemalloc its arenas are purged (True when it accepted); under glibc ``malloc_trim``
    runs (True when it returned any pages); elsewhere nothing happens (False).
    """
    purge = _jemalloc_purge()
    if purge is not None:
        return purge()
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False


def release(on_gpu: bool = False) -> None:
    """Collect garbage, then (training on CPU) give the freed heap back to the system.

    Args:
        on_gpu: The model lives on a GPU: its memory is torch's caching allocator's business,
            and the host heap holds little, so only garbage is collected.

    """
    gc.collect()
    if not on_gpu:
        trim()


def model_on_gpu(model: object) -> bool:
    """Whether ``model``'s first parameter lives on a CUDA device (False when it has none)."""
    params = getattr(model, "parameters", None)
    if params is None:
        return False
    first = next(iter(params()), None)
    return bool(first is not None and getattr(first, "is_cuda", False))
