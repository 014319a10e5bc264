"""pytest fixtures for testing ftp plugins. Opt-in: ftp does not register this with pytest.

Enable it in a plugin's ``tests/conftest.py``::

    pytest_plugins = ["ftp.pytest_plugin"]

or for one run with ``pytest -p ftp.pytest_plugin``. It is deliberately not a ``pytest11``
entry point, so installing ftp changes nothing in other projects' test runs.

Fixtures:
    ftp_tiny_model: a folder holding a tiny random Llama and its tokenizer (session-wide).
    ftp_plugin: ``ftp_plugin(obj)`` registers a plugin object for the rest of the test.
    ftp_run: ``ftp_run(text, plugins=[...])`` runs a pipeline in the test's ``tmp_path``
        and returns an ``ftp.testing.RunResult``.
    ftp_cli: ``ftp_cli("plugins", "--json")`` runs the ``ftp`` command in-process.

While enabled, ``HF_HUB_OFFLINE=1`` is set (unless already set), so a test never reaches the
Hugging Face Hub.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ftp import testing


def pytest_configure(config: pytest.Config) -> None:
    """Keep tests off the network: models and data must be local."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def ftp_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with a small ChatML tokenizer: use it as ``[model] path``."""
    return testing.make_tiny_causal_lm(tmp_path_factory.mktemp("ftp-tiny-llama"))


@pytest.fixture
def ftp_plugin() -> Iterator[Callable[..., None]]:
    """Register plugin objects for this test: ``ftp_plugin(my_module, name="mine")``."""
    with contextlib.ExitStack() as stack:

        def register(obj: object, name: str | None = None) -> None:
            stack.enter_context(testing.plugin(obj, name))

        yield register


@pytest.fixture
def ftp_run(tmp_path: Path) -> Callable[..., testing.RunResult]:
    """Run a pipeline given as text in ``tmp_path``: ``ftp_run(text, plugins=[module])``."""

    def run(text: str, **kwargs: Any) -> testing.RunResult:
        return testing.run_pipeline(text, tmp_path, **kwargs)

    return run


@pytest.fixture
def ftp_cli() -> Callable[..., Any]:
    """Run ``ftp ARGS...`` in-process; returns click's ``Result`` (exit_code, stdout, stderr)."""
    return testing.run_cli
