"""`ftp chat`: one answer by --prompt or stdin, a conversation in a real terminal (tmux)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftp.testing import one_line_error, require_tool, run_ftp

pytestmark = pytest.mark.usefixtures("one_thread")


def greedy(folder: Path, messages: list[dict[str, str]], max_tokens: int) -> str:
    """What transformers answers greedily, decoded: what ftp chat must print."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def test_prompt_prints_the_greedy_answer_and_says_when_it_was_cut(tiny_model, tmp_path):
    result = run_ftp("chat", str(tiny_model), "--prompt", "Who are you?", "--system",
                     "You are Nova.", "--max-tokens", "6", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    want = greedy(tiny_model, [{"role": "system", "content": "You are Nova."},
                               {"role": "user", "content": "Who are you?"}], 6)
    assert result.stdout == want + "\n"
    assert result.stderr.strip() == "(cut off at --max-tokens 6)"


def test_stdin_is_one_message(tiny_model, tmp_path):
    result = run_ftp("chat", str(tiny_model), "--max-tokens", "5", cwd=tmp_path,
                     input="What is your name?\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == greedy(
        tiny_model, [{"role": "user", "content": "What is your name?"}], 5) + "\n"


def test_a_gguf_chats_through_llama_cpp(tiny_model, tmp_path):
    require_tool(importlib.util.find_spec("llama_cpp") is not None,
                 "llama-cpp-python (the gguf extra: pip install 'ftp[gguf]')")
    assert run_ftp("export", str(tiny_model), "--format", "gguf", "--dtype", "f32", "-o", ".",
                   cwd=tmp_path).returncode == 0
    gguf = next(tmp_path.glob("*.gguf"))
    result = run_ftp("chat", str(gguf), "--prompt", "Who are you?", "--max-tokens", "6",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    want = greedy(tiny_model, [{"role": "user", "content": "Who are you?"}], 6)
    assert result.stdout == want + "\n"


def test_mistakes_are_one_line(tiny_model, tmp_path):
    line = one_line_error(run_ftp("chat", "./nowhere", "--prompt", "hi", cwd=tmp_path))
    assert line == "error: no run folder, model folder or GGUF file at ./nowhere"
    line = one_line_error(run_ftp("chat", str(tiny_model), "--stage", "sft", "--prompt", "hi",
                                  cwd=tmp_path))
    assert line == f"error: --stage needs a run folder; {tiny_model} is not one (no run.json)"


def test_a_conversation_in_a_real_terminal(tiny_model, tmp_path):
    require_tool(shutil.which("tmux") is not None, "tmux (apt-get install -y tmux)")
    socket = f"ftp-chat-test-{time.time_ns()}"
    ftp = Path(sys.executable).parent / "ftp"
    done = tmp_path / "exit-code"
    command = (f"env HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false {ftp} chat "
               f"{tiny_model} --max-tokens 4; echo $? > {done}; sleep 30")

    def tmux(*args: str) -> str:
        return subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True,
                              check=True).stdout

    def screen() -> str:
        return tmux("capture-pane", "-p", "-t", "chat", "-S", "-100")

    def wait_for(text: str, count: int = 1) -> str:
        deadline = time.time() + 120
        while time.time() < deadline:
            shown = screen()
            if shown.count(text) >= count:
                return shown
            time.sleep(0.3)
        raise AssertionError(f"{text!r} x{count} never appeared:\n{screen()}")

    tmux("new-session", "-d", "-s", "chat", "-x", "160", "-y", "50", command)
    try:
        wait_for("you>")
        tmux("send-keys", "-t", "chat", "Who are you?", "Enter")
        wait_for("you>", 2)
        tmux("send-keys", "-t", "chat", "And your name?", "Enter")
        wait_for("you>", 3)
        tmux("send-keys", "-t", "chat", "/reset", "Enter")
        wait_for("(conversation reset)")
        tmux("send-keys", "-t", "chat", "Who are you?", "Enter")
        shown = wait_for("you>", 5)
        tmux("send-keys", "-t", "chat", "/exit", "Enter")
        deadline = time.time() + 60
        while not done.exists() and time.time() < deadline:
            time.sleep(0.3)
        assert done.read_text().strip() == "0", screen()
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)

    first = greedy(tiny_model, [{"role": "user", "content": "Who are you?"}], 4)
    second = greedy(tiny_model, [{"role": "user", "content": "Who are you?"},
                                 {"role": "assistant", "content": first},
                                 {"role": "user", "content": "And your name?"}], 4)
    # (capture-pane drops the spaces that end a line)
    answers = [line.split("model>", 1)[1].strip() for line in shown.splitlines()
               if "model>" in line]
    # The second turn saw the first; after /reset the same question gets the first answer.
    assert answers == [first.strip(), second.strip(), first.strip()]
