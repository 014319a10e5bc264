import os
from pathlib import Path

import pytest

# Tests never reach the Hub: everything is local files, tiny models or the offline catalog.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with a small ChatML tokenizer, in a folder."""
    from ftp.testing import make_tiny_causal_lm

    return make_tiny_causal_lm(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """SmolLM2-135M-Instruct's real tokenizer, from the offline catalog (fetched once)."""
    from ftp_builtin.models import HFProvider

    return HFProvider(HFProvider.Config(path="smollm2-135m-instruct")).load_tokenizer()


@pytest.fixture(autouse=True)
def _tokenized_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
                     ) -> Path:
    """Each test caches tokenized data in its own temporary folder, never in ~/.cache/ftp."""
    folder = tmp_path_factory.mktemp("tokenized-cache")
    monkeypatch.setenv("FTP_TOKENIZED_CACHE_DIR", str(folder))
    return folder


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models train fastest on one thread, and a busy 2-core machine stays fast that way.

    ftp uses every core unless OMP_NUM_THREADS is set; set it, for runs in this process and in
    subprocesses alike, so that they also compute alike. Modules that train opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    import torch

    before = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        yield
    torch.set_num_threads(before)
