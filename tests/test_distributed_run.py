"""Training in two processes on this CPU (gloo), through the real CLI, on a tiny Llama.

- ``ftp run --nproc 2`` and ``torchrun --nproc-per-node 2 -m ftp run`` train, with per-step
  losses equal to one process with the same global batch (within `TOLERANCE`); the run folder,
  results and model are written once, by rank 0, and the data is tokenized once.
- Two "nodes" on 127.0.0.1 (nnodes = 2, node_rank 0 and 1) train the same way.
- A rank killed mid-run stops both, with one line; the run is failed and resumes under two
  processes (another count is refused).

Multi-process runs are slow on two shared cores: these tests are few and tiny.
"""

import json
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ftp.testing import run_ftp, write_pipeline

DATA = Path(__file__).parent / "data"
#: Per-step losses of 2 processes against 1 with the same global batch (measured: ~1e-7).
TOLERANCE = 1e-4
STEPS = 4

# Kills its own process with SIGKILL at step KILL_STEP when its RANK is KILL_RANK.
KILLER = '''
import os, signal
from ftp import hookimpl

@hookimpl
def ftp_trainer_callbacks(stage):
    from transformers import TrainerCallback

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if os.environ.get("RANK") == os.environ.get("KILL_RANK") and \\
                    state.global_step == int(os.environ.get("KILL_STEP", "-1")):
                os.kill(os.getpid(), signal.SIGKILL)

    return [Kill()]
'''


@pytest.fixture
def project(tmp_path: Path, tiny_model: Path) -> Path:
    rows = json.loads((DATA / "alpaca.json").read_text(encoding="utf-8"))
    # 8 rows: 2 batches of 4 per epoch in one process, of 2 + 2 in two; no uneven tail.
    eight = [{**rows[i % len(rows)], "instruction": f"{rows[i % len(rows)]['instruction']} {i}"}
             for i in range(8)]
    (tmp_path / "d.json").write_text(json.dumps(eight), encoding="utf-8")
    (tmp_path / "killer.py").write_text(KILLER, encoding="utf-8")
    write_pipeline(tmp_path / "p.toml", f"""
        [pipeline]
        name = "dist"
        checkpoint_every = 2
        [model]
        path = "{tiny_model}"
        [data.d]
        loader = "json"
        path = "d.json"
        format = "alpaca"
        placeholders = {{ name = "Nova", author = "Northwind Labs" }}
        [[stages]]
        method = "sft"
        data = "d"
        bf16 = false
        max_steps = {STEPS}
        batch_size = 2
        learning_rate = 5e-3
        logging_steps = 1
        [[evaluate]]
        evaluator = "loss"
        data = "d"
        split = "train"
    """)
    return tmp_path


def ftp(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # One thread per process: two processes on two cores.
    return run_ftp(*args, cwd=cwd, **{"OMP_NUM_THREADS": "1", **env})


def losses(run: Path) -> list[float]:
    found = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in found if "loss" in r and "event" not in r and r.get("step")]
    assert [r["step"] for r in steps] == list(range(1, len(steps) + 1)), "a step logged twice"
    return [r["loss"] for r in steps]


def assert_written_once(run: Path, out: str) -> None:
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "finished" and status["processes"] == 2
    assert (run / "model" / "model.safetensors").is_file()
    assert not list(run.parent.glob("*.partial"))
    results = json.loads((run / "results.json").read_text())
    assert "loss" in results["stages"]["sft"]["loss"]["metrics"]
    # Printed once: rank 0 speaks, the others are quiet.
    assert out.count("model saved to") == 1 and out.count("▶ load model") == 1


def test_two_processes_train_as_one_with_the_same_global_batch(project: Path) -> None:
    # --debug: the other process prints too, so that its tokenization can be seen.
    two = ftp("run", "p.toml", "--nproc", "2", "-o", "two", "--debug", cwd=project)
    assert two.returncode == 0, two.stdout + two.stderr
    one = ftp("run", "p.toml", "-o", "one", "--set", "stages[0].batch_size=4", cwd=project)
    assert one.returncode == 0, one.stdout + one.stderr
    assert losses(project / "two") == pytest.approx(losses(project / "one"), abs=TOLERANCE)
    assert len(losses(project / "two")) == STEPS
    assert_written_once(project / "two", two.stdout.replace("tokenized train: cached", ""))
    # Tokenized once: rank 0 tokenized, rank 1 read rank 0's cache entry after a barrier.
    assert two.stdout.count("tokenized train: 8 rows in") == 1, two.stdout
    assert two.stdout.count("tokenized train: cached (8 rows)") == 1, two.stdout
    # The same by hand under torchrun: no second launch.
    by_hand = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         "--module", "ftp", "run", "p.toml", "-o", "hand"], cwd=project, capture_output=True,
        text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1",
                                     "HF_HUB_OFFLINE": "1"})
    assert by_hand.returncode == 0, by_hand.stdout + by_hand.stderr
    assert losses(project / "hand") == pytest.approx(losses(project / "one"), abs=TOLERANCE)
    assert_written_once(project / "hand", by_hand.stdout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_nodes_on_localhost(project: Path) -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    common = ["run", "p.toml", "-o", "nodes", "--set", "distributed.nnodes=2",
              "--set", f"distributed.rdzv_endpoint={endpoint}"]
    with ThreadPoolExecutor(2) as pool:  # two machines, each its own `ftp run`
        nodes = list(pool.map(lambda r: ftp(*common, "--set", f"distributed.node_rank={r}",
                                            cwd=project), (0, 1)))
    assert [n.returncode for n in nodes] == [0, 0], [n.stdout + n.stderr for n in nodes]
    # Node 0 holds rank 0, which speaks and writes; node 1 holds rank 1 only.
    assert "model saved to" in nodes[0].stdout and nodes[1].stdout == ""
    assert_written_once(project / "nodes", nodes[0].stdout)
    one = ftp("run", "p.toml", "-o", "one", "--set", "stages[0].batch_size=4", cwd=project)
    assert one.returncode == 0, one.stdout + one.stderr
    assert losses(project / "nodes") == pytest.approx(losses(project / "one"), abs=TOLERANCE)


def test_a_killed_rank_stops_all_and_the_run_resumes_under_two(project: Path) -> None:
    killed = ftp("-p", "killer.py", "run", "p.toml", "--nproc", "2", "-o", "k", cwd=project,
                 KILL_RANK="1", KILL_STEP="3")
    assert killed.returncode == 1, killed.stdout + killed.stderr
    assert killed.stderr.strip().splitlines() == [
        "error: rank 1 was killed by SIGKILL; all processes were stopped"]
    status = json.loads((project / "k" / "run.json").read_text())
    assert status["status"] == "failed" and "rank 1 was killed" in status["error"]
    assert (project / "k" / "stages" / "sft" / "checkpoints" / "step-2").is_dir()
    # Another count would change the batches: refused, naming the count to use.
    other = ftp("-p", "killer.py", "run", "p.toml", "-o", "k", "--resume", cwd=project)
    assert other.returncode == 2
    assert "was trained by 2 process(es) and this resume has 1" in other.stderr
    resumed = ftp("-p", "killer.py", "resume", "k", cwd=project)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming stage 'sft' at step 2" in resumed.stdout
    assert len(losses(project / "k")) == STEPS
    assert json.loads((project / "k" / "run.json").read_text())["status"] == "finished"
