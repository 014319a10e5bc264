"""What every built-in method shares when it trains."""

import pytest

from ftp import RunError
from ftp.training import explain_out_of_memory

TOO_BIG = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_becomes_a_run_error_naming_what_to_lower():
    expected = r"^out of memory: lower batch_size or block_size, or use an adapter$"
    with pytest.raises(RunError, match=expected), explain_out_of_memory("batch_size or block_size"):
        raise TOO_BIG


def test_other_runtime_errors_pass_through_unchanged():
    with pytest.raises(RuntimeError, match="shape mismatch") as info, \
            explain_out_of_memory("batch_size"):
        raise RuntimeError("shape mismatch")
    assert not isinstance(info.value, RunError)
