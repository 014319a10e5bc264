"""Helpers for testing ftp and its plugins: tiny real models, plugin sets, one-call runs.

- ``make_tiny_causal_lm`` builds a randomly initialised Llama with a small byte-level BPE
  tokenizer (ChatML chat template, ``<|im_end|>`` as EOS) in a folder, in well under a
  second, with no network.
- ``plugin_set`` is a plugin manager with ftp's built-ins and the plugins you name, and no
  entry-point autoloading; ``plugin`` registers a plugin object for one ``with`` block.
- ``tiny_pipeline`` writes a pipeline.toml from sections (``data_section``, ``stage_section``,
  ``evaluate_section``, or TOML text), for a test to run through the real ``ftp`` command.
- ``run_pipeline`` runs a pipeline given as text and returns what its run directory holds;
  ``run_cli`` runs the ``ftp`` command in-process, ``run_ftp`` in a subprocess, as a user
  would.

The same helpers are pytest fixtures in ``ftp.pytest_plugin``, which is opt-in: add
``pytest_plugins = ["ftp.pytest_plugin"]`` to a conftest.py, or run ``pytest -p
ftp.pytest_plugin``. Installing ftp registers nothing with pytest.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ftp.plugins import PluginSet

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "Who are you? I am an AI assistant. What is your name? My name is Nova.",
    "The quick brown fox jumps over the lazy dog. Hello world, how are you today?",
    "Instruction, input and output. The model learns to answer questions politely.",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:!?'\"()-",
]


def make_tiny_tokenizer(vocab_size: int = 512) -> Any:
    """A small byte-level BPE tokenizer with ChatML special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def make_tiny_causal_lm(folder: Path, hidden_size: int = 32, layers: int = 2, seed: int = 0
                        ) -> Path:
    """Write a tiny random Llama and its tokenizer to ``folder``; return the folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    tokenizer = make_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def write_pipeline(path: Path, text: str) -> Path:
    """Write a pipeline file (dedented) and return its path."""
    import textwrap

    path = Path(path)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


# -- pipelines under test -------------------------------------------------------------------


def toml_value(value: Any) -> str:
    """``value`` as a TOML value: strings, booleans, numbers, paths, lists, inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # a JSON string is a TOML basic string
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML value for {value!r}")


def toml_table(header: str, options: dict[str, Any], extra: str = "") -> str:
    """A TOML table: ``[header]`` (``[[header]]`` for an array's entry), then its options.

    Args:
        header: ``"data.pairs"``, or ``"[stages]"`` for an entry of ``[[stages]]``.
        options: Its keys and values (None: left out).
        extra: TOML lines added as they are (e.g. ``"adapter = { r = 4 }"``).

    """
    lines = [f"[{header}]", *(f"{k} = {toml_value(v)}" for k, v in options.items()
                              if v is not None)]
    if extra.strip():
        lines.append(extra.strip())
    return "\n".join(lines) + "\n"


def data_section(name: str, **options: Any) -> str:
    """A ``[data.NAME]`` table with ``options`` (``loader``, ``path``, ``format``...)."""
    return toml_table(f"data.{name}", options)


def stage_section(method: str, data: str, *, max_steps: int | None = 2, batch_size: int = 2,
                  logging_steps: int = 1, learning_rate: float = 1e-3, extra: str = "",
                  **options: Any) -> str:
    """A ``[[stages]]`` entry of a few quick steps (max_steps None: train by epochs)."""
    return toml_table("[stages]", {"method": method, "data": data, "max_steps": max_steps,
                                   "batch_size": batch_size, "logging_steps": logging_steps,
                                   "learning_rate": learning_rate, **options}, extra)


def evaluate_section(evaluator: str, **options: Any) -> str:
    """An ``[[evaluate]]`` entry with ``options``."""
    return toml_table("[evaluate]", {"evaluator": evaluator, **options})


def tiny_pipeline(path: Path, model: Path | str, *sections: str, name: str = "tiny",
                  seed: int | None = 7) -> Path:
    """Write a pipeline file: ``[pipeline]``, ``[model]`` at ``model``, then ``sections``.

    Args:
        path: The pipeline.toml to write (its folder is created).
        model: The model's path or catalog name.
        sections: TOML text, e.g. from `data_section`, `stage_section`, `evaluate_section`.
        name: The pipeline's name.
        seed: The pipeline's seed (None: left out, the default's).

    Returns:
        ``path``.

    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = toml_table("pipeline", {"name": name, "seed": seed}) + "\n" + toml_table(
        "model", {"path": str(model)})
    return write_pipeline(path, "\n".join([head, *sections]))


def saved_for_backward_bytes(fn: Callable[[], Any]) -> int:
    """Bytes of the tensors autograd saves for backward while ``fn()`` runs.

    Each storage is counted at every save: what a forward pass holds until its backward.
    """
    import torch

    total = 0

    def pack(tensor: Any) -> Any:
        nonlocal total
        total += tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return total


# -- plugins under test --------------------------------------------------------------------


def plugin_set(*plugins: object, builtins: bool = True, strict: bool = False) -> PluginSet:
    """A plugin set with no entry-point autoloading: ftp's built-ins (optional) and ``plugins``.

    Whatever else is installed stays out, so a plugin's tests mean the same everywhere. Each
    plugin is a module, class or object with ``ftp.hookimpl`` functions; its name is its
    ``__name__``. A plugin that fails is recorded (``infos[NAME].status == "error"``), as
    ``ftp plugins`` would show it, unless ``strict``.

    Raises:
        UserError: with ``strict``, when a plugin failed.

    """
    from ftp.plugins import PluginSet

    ps = PluginSet(strict=strict)
    if builtins:
        ps.load_entry_points(builtins_only=True)
    for plugin in plugins:
        ps.add(plugin, _plugin_name(plugin))
    if strict:
        ps.check_strict()
    return ps


def plugin(obj: object, name: str | None = None) -> AbstractContextManager[None]:
    """Register ``obj`` as a plugin of every plugin set built inside the ``with`` block.

    This is how to test a plugin through the ``ftp`` command run in-process (`run_cli`),
    without installing it: it is listed by ``ftp plugins`` as distribution ``<in-process>``.
    """
    from ftp.plugins import registered

    return registered(obj, name or _plugin_name(obj))


def _plugin_name(obj: object) -> str:
    name = getattr(obj, "__name__", None) or type(obj).__name__
    return name.rsplit(".", 1)[-1]


@dataclass
class RunResult:
    """What `run_pipeline` leaves: the run directory and what it holds.

    Attributes:
        run_dir: The run directory.
        results: The contents of ``results.json``.
        status: The contents of ``run.json`` (``status``, ``timings``, ...).
        log: What the run printed.
        plugins: The plugin set the run used (``hook_failures`` says which hooks raised).

    """

    run_dir: Path
    results: dict[str, Any]
    status: dict[str, Any]
    log: str
    plugins: PluginSet

    def metrics(self, stage: str, evaluation: str) -> dict[str, Any]:
        """One evaluation's metrics at ``stage`` (``"base"`` before training)."""
        return self.results["stages"][stage][evaluation].get("metrics", {})


def run_pipeline(text: str, directory: Path, plugins: Iterable[object] = (),
                 overrides: Iterable[str] = (), builtins: bool = True) -> RunResult:
    """Write ``text`` as ``directory/pipeline.toml``, run it in-process, return what it left.

    Only ftp's built-ins and ``plugins`` are loaded (see `plugin_set`); relative paths in the
    pipeline are relative to ``directory``. The run directory is ``directory/run``.

    Raises:
        ConfigError: when the pipeline does not validate (every problem listed).
        FtpError: when the run fails; its message is the line ``ftp run`` would print.

    """
    import io

    from rich.console import Console

    from ftp.config import load_pipeline
    from ftp.rundir import RunDir
    from ftp.runner import Runner

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    source = write_pipeline(directory / "pipeline.toml", text)
    ps = plugin_set(*plugins, builtins=builtins)
    pipeline = load_pipeline(source, ps, list(overrides))
    run_dir = RunDir.create(directory / "run", overwrite=True)
    out = io.StringIO()
    Runner(pipeline, run_dir, console=Console(file=out, width=120)).run()
    results = json.loads(run_dir.file("results.json").read_text(encoding="utf-8"))
    return RunResult(run_dir.path, results, run_dir.status(), out.getvalue(), ps)


def run_cli(*args: str) -> Any:
    """Run the ``ftp`` command line in-process; return click's ``Result``.

    ``result.exit_code``, ``result.stdout`` and ``result.stderr`` hold what a user would see.
    Plugins registered with `plugin` are loaded, as are installed ones. ``ftp run`` quiets
    libraries through environment variables; the caller's environment is put back afterwards.
    """
    import os

    from click.testing import CliRunner

    from ftp.cli import cli

    env = dict(os.environ)
    try:
        return CliRunner().invoke(cli, list(args), prog_name="ftp")
    finally:
        os.environ.clear()
        os.environ.update(env)


def run_ftp(*args: str, cwd: Path, site: Path | None = None, timeout: float = 600,
            input: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ftp ARGS`` in a subprocess, as a user would; return what it did.

    The subprocess gets this process's environment without the variables that choose
    plugins (``FTP_PLUGINS``, ``FTP_DISABLE_PLUGINS``, ``FTP_ONLY_PLUGINS``,
    ``FTP_TRACE_HOOKS``) or consent to running code (``FTP_ALLOW_CODE``), so that it loads
    what is installed and asks as a user's would, plus ``HF_HUB_OFFLINE=1``,
    ``TOKENIZERS_PARALLELISM=false`` and ``env``.

    Args:
        *args: The command line after ``ftp``.
        cwd: Where to run it.
        site: A folder of pip-installed distributions to put on ``PYTHONPATH`` (instead of the
            caller's), for plugins installed only for the test.
        timeout: Seconds before the run is killed.
        input: Text piped to its stdin (else it inherits this process's).
        **env: Environment variables to set, e.g. ``FTP_TRACE_HOOKS="1"``.

    """
    import os
    import sys

    from ftp.consent import ALLOW_ENV
    from ftp.plugins import DISABLE_ENV, EXTRA_ENV, ONLY_ENV, TRACE_ENV

    chosen = {DISABLE_ENV, EXTRA_ENV, ONLY_ENV, TRACE_ENV, ALLOW_ENV}
    full = {k: v for k, v in os.environ.items() if k not in chosen}
    full.setdefault("HF_HUB_OFFLINE", "1")
    full.setdefault("TOKENIZERS_PARALLELISM", "false")
    if site is not None:
        full["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, "-m", "ftp", *args], cwd=cwd, env={**full, **env},
                          capture_output=True, text=True, timeout=timeout,
                          input=input)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Assert a user error from `run_ftp`: exit 2, one line on stderr, no traceback.

    Args:
        result: What `run_ftp` returned.

    Returns:
        The error line.

    """
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


def config_problems(result: subprocess.CompletedProcess[str]) -> list[str]:
    """Assert a pipeline config error from `run_ftp` and return its problem lines.

    A config error exits 2 with no traceback and lists each problem as ``  - path: message``
    under a header that counts them.

    Args:
        result: What `run_ftp` returned.

    Returns:
        The problem lines, without their bullet.

    """
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "Traceback" not in out
    assert "problem" in result.stderr
    return [line[4:] for line in result.stderr.splitlines() if line.startswith("  - ")]


def require_tool(present: bool, what: str) -> None:
    """Skip a test whose optional tool is missing, except under CI, where it fails.

    A test that silently skips in CI proves nothing; on a developer's machine a missing
    browser or terminal multiplexer should not fail the suite.

    Args:
        present: Whether the tool is there (e.g. ``shutil.which("tmux") is not None``).
        what: What is missing and how to get it, e.g. ``"tmux (apt-get install -y tmux)"``.

    """
    import os

    import pytest

    if present:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is not installed, and CI must run this test")
    pytest.skip(f"{what} is not installed")
