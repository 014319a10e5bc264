"""The GRPO, ORPO and reward-model examples validate, and the arithmetic data is what its
generator writes."""

import subprocess
import sys
from pathlib import Path

import pytest

from ftp.testing import run_cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.mark.parametrize("name", ["grpo", "orpo", "reward"])
def test_example_validates(name):
    result = run_cli("validate", str(EXAMPLES / f"{name}.toml"))
    assert result.exit_code == 0, result.output


def test_arithmetic_data_is_what_the_generator_writes(tmp_path):
    script = EXAMPLES / "data" / "make_arithmetic.py"
    copy = tmp_path / script.name
    copy.write_text(script.read_text(encoding="utf-8"), encoding="utf-8")
    subprocess.run([sys.executable, str(copy)], check=True, capture_output=True, timeout=60)
    for name in ("arithmetic_train.jsonl", "arithmetic_eval.jsonl"):
        assert (tmp_path / name).read_text() == (EXAMPLES / "data" / name).read_text(), name
    train = {line for line in (tmp_path / "arithmetic_train.jsonl").read_text().splitlines()}
    held_out = set((tmp_path / "arithmetic_eval.jsonl").read_text().splitlines())
    assert len(train) == 400 and len(held_out) == 60 and not train & held_out
