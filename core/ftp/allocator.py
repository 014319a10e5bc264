"""Which C memory allocator the commands that load models run on, and switching to jemalloc.

Training on a CPU frees and allocates tensors of a different shape at every step (padding-free
batches vary in length). glibc's malloc keeps such freed blocks in a fragmented heap, so a
process's resident memory swings well above what one step needs; jemalloc reuses and returns
them far better. Measured alone on a 2-core CPU, float32, SmolLM2-135M with LoRA r16 on rows of
350-650 tokens: peak RSS 3.61-3.74 GB under glibc, 2.73-2.74 GB under jemalloc, at the same
speed (docs/runs.md, "Memory").

An allocator can only be chosen before a process starts, through ``LD_PRELOAD``. So the
commands that load models (``ftp run``, ``resume``, ``plan``, ``models compare``, ``chat``,
``export``) call `prefer` first: when jemalloc is installed and not yet loaded, it runs the very
same command line again in this process (``os.execve``) with jemalloc preloaded, before torch is
imported. ``FTP_ALLOCATOR`` chooses: ``auto`` (the default: jemalloc where found on Linux, else
the system's), ``jemalloc`` (required: an error where it is not found), ``system`` (never
switch), or the path of an allocator's ``.so`` to preload. The new process inherits
``LD_PRELOAD``, and so do the processes it starts (the ranks of a distributed run).

`current` reads what the process really runs on (its memory maps), not what was asked.

Nothing here imports torch.
"""

from __future__ import annotations

import ctypes.util
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from ftp.errors import UserError

ENV = "FTP_ALLOCATOR"
# Set in the re-executed process: it never switches again, even where the loader ignored
# LD_PRELOAD (a library it could not load), so a command never loops.
SWITCHED_ENV = "FTP_ALLOCATOR_SWITCHED"
CHOICES = ("auto", "jemalloc", "system")
INSTALL_HINT = "apt install libjemalloc2, dnf install jemalloc or conda install jemalloc"
# Where distributions put it when ctypes.util.find_library does not see it (no ldconfig cache).
_PATHS = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
    "/usr/local/lib/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.1",
)
# Library name stems of the allocators a process may run on instead of its C library's own.
_KNOWN = (("libjemalloc", "jemalloc"), ("libtcmalloc", "tcmalloc"), ("libmimalloc", "mimalloc"))

# Only the `ftp` command's own process may re-execute itself (`allow_switch`, from
# `ftp.cli.main`): ftp used in-process (a test's CliRunner, a notebook) never replaces its host.
_switch_allowed = False


@dataclass(frozen=True)
class Allocator:
    """The allocator a process runs on.

    Attributes:
        name: ``jemalloc``, ``tcmalloc``, ``mimalloc``, ``glibc malloc`` or ``system``.
        library: The mapped shared library's path, for an allocator other than the C library's.

    """

    name: str
    library: str | None = None


def allow_switch() -> None:
    """Let `prefer` re-execute this process: called by the ``ftp`` command's entry point."""
    global _switch_allowed
    _switch_allowed = True


def requested() -> str:
    """``FTP_ALLOCATOR``'s value (``auto`` when unset), checked.

    Raises:
        UserError: Neither a known choice nor the path of a file.

    """
    raw = os.environ.get(ENV, "").strip() or "auto"
    if raw.lower() in CHOICES:
        return raw.lower()
    if "/" in raw or ".so" in raw:
        if not Path(raw).is_file():
            raise UserError(f"{ENV}={raw}: no such library file; install jemalloc "
                            f"({INSTALL_HINT}) or set {ENV}=system")
        return raw
    raise UserError(f"{ENV}={raw!r}: expected auto, jemalloc, system or the path of an "
                    "allocator's .so file")


def find_jemalloc() -> str | None:
    """The path (or loader name) of an installed jemalloc on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    # A conda environment's own (conda install jemalloc): not in the system loader's cache.
    prefixes = dict.fromkeys(p for p in (os.environ.get("CONDA_PREFIX"), sys.prefix) if p)
    for path in (*(os.path.join(p, "lib", "libjemalloc.so.2") for p in prefixes), *_PATHS):
        if os.path.isfile(path):
            return path
    return ctypes.util.find_library("jemalloc")


def _mapped() -> list[str]:
    """The shared libraries mapped into this process (Linux's /proc/self/maps), else []."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            return sorted({line.split(maxsplit=5)[5].strip() for line in maps
                           if len(line.split(maxsplit=5)) == 6 and ".so" in line})
    except OSError:
        return []


def current() -> Allocator:
    """The allocator this process really runs on, read from the libraries mapped into it."""
    for path in _mapped():
        base = os.path.basename(path)
        for stem, name in _KNOWN:
            if base.startswith(stem):
                return Allocator(name, path)
    if platform.libc_ver()[0] == "glibc":
        return Allocator("glibc malloc")
    return Allocator("system")


def _is_mapped(library: str) -> bool:
    real = os.path.realpath(library)
    return any(os.path.realpath(path) == real for path in _mapped())


def prefer() -> None:
    """Re-execute this command with jemalloc (or ``FTP_ALLOCATOR``'s library) preloaded.

    Does nothing in-process (no `allow_switch`), with ``FTP_ALLOCATOR=system``, off Linux under
    ``auto``, when the allocator is loaded already, and in a process that switched once. Call it
    before torch is imported: the new process starts the command over.

    Raises:
        UserError: ``FTP_ALLOCATOR`` is not valid, or asks for jemalloc where it is not found
            or could not be loaded.

    """
    want = requested()  # a bad value is an error wherever ftp runs
    if not _switch_allowed or want == "system":
        return
    linux = sys.platform.startswith("linux")
    if want == "auto" and not linux:
        return
    if want in ("auto", "jemalloc"):
        if current().name == "jemalloc":
            return
        library = find_jemalloc()
        if library is None:
            if want == "auto":
                return
            raise UserError(f"{ENV}=jemalloc: jemalloc was not found"
                            + ("" if linux else " (preloading works on Linux only)")
                            + f"; install it ({INSTALL_HINT}) or set {ENV}=system")
    else:
        library = want
        if _is_mapped(library):
            return
    if os.environ.get(SWITCHED_ENV):
        # This process was started with it preloaded, and the loader left it out.
        if want == "auto":
            return
        raise UserError(f"{ENV}={os.environ.get(ENV)}: {library} could not be preloaded "
                        f"(LD_PRELOAD); install jemalloc ({INSTALL_HINT}) or set {ENV}=system")
    preload = os.environ.get("LD_PRELOAD", "")
    env = {**os.environ, SWITCHED_ENV: "1",
           "LD_PRELOAD": f"{library}:{preload}" if preload else library}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)


def describe(found: Allocator | None = None) -> str:
    """One short line for a run's header: the allocator, and how to get jemalloc where it lacks.

    Args:
        found: What `current` returned (read now when None).

    """
    found = found or current()
    if found.name != "glibc malloc":
        return f"memory allocator: {found.name}"
    if os.environ.get(ENV, "").strip().lower() == "system":
        return f"memory allocator: glibc malloc ({ENV}=system)"
    if find_jemalloc() is None:
        return ("memory allocator: glibc malloc (libjemalloc2 would lower peak memory ~25% on "
                "CPU: docs/runs.md#memory)")
    return "memory allocator: glibc malloc"


def record() -> dict[str, str | bool | None]:
    """What environment.json says about the allocator: really loaded, requested, by whom.

    ``switched`` is True where ftp re-executed the command to preload it (`prefer`, or in the
    process that started this rank), False where the user's own ``LD_PRELOAD`` loaded it.
    """
    found = current()
    return {"name": found.name, "library": found.library,
            "requested": os.environ.get(ENV, "").strip() or "auto",
            "switched": bool(os.environ.get(SWITCHED_ENV))}
