"""``ftp plan`` and ``ftp run --preflight``: one probe per stage, on the longest batch its
method keeps, through the real CLI on tiny models.

The ORPO and reward stages are the cases where the longest rows are exactly the ones the
method leaves out (a prompt that fills max_length; a pair over max_length): the probe must
measure rows the method trains on, not fail. The cpt stage's estimate must be made at its
block size, not at the length of its (long) documents.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ftp.testing import (
    data_section,
    make_tiny_causal_lm,
    run_ftp,
    tiny_pipeline,
    toml_table,
    write_pipeline,
)

pytestmark = pytest.mark.usefixtures("one_thread")

#: The adapter of the tiny pipelines' stages.
LORA = {"type": "lora", "r": 4, "alpha": 8}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model, instruction data, preference pairs (the longest ones unusable at
    max_length 64), long documents and arithmetic prompts; a one-stage sft pipeline and a
    four-stage one (cpt, orpo, grpo, reward), each planned once for the whole module."""
    root = tmp_path_factory.mktemp("plan")
    make_tiny_causal_lm(root / "model")
    rows = [{"instruction": f"Question {i}: " + "why " * (i % 6), "input": "",
             "output": f"Answer {i}. " + "yes " * (i % 4 * 3)} for i in range(30)]
    (root / "sft.json").write_text(json.dumps(rows), encoding="utf-8")
    pairs = []
    for i in range(24):
        # Every fourth pair's prompt alone is far over max_length = 64: ORPO leaves it out,
        # the reward trainer too; these are the longest rows by any plain count.
        prompt = ("tell me " * 60) if i % 4 == 0 else f"Say hello {i} " + "please " * (i % 5)
        pairs.append({"prompt": prompt, "chosen": "Hello there friend. " * (1 + i % 3),
                      "rejected": "No."})
    (root / "pairs.json").write_text(json.dumps(pairs), encoding="utf-8")
    docs = ["The quick brown fox jumps over the lazy dog. " * 60 for _ in range(4)]
    (root / "wiki.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    (root / "sums.json").write_text(json.dumps(
        [{"question": f"What is {i} + {i}?"} for i in range(8)]), encoding="utf-8")
    tiny_pipeline(root / "sft.toml", "model",
                  data_section("d", loader="json", path="sft.json", format="alpaca",
                               eval_fraction=0.2),
                  toml_table("[stages]", {"method": "sft", "data": "d", "adapter": LORA,
                                          "epochs": 2, "batch_size": 4, "max_length": 48}),
                  name="tiny-sft", seed=1)
    write_pipeline(root / "several.toml", """
        [pipeline]
        name = "tiny-several"
        seed = 1

        [model]
        path = "model"

        [data.pairs]
        loader = "json"
        path = "pairs.json"
        format = "preference"

        [data.wiki]
        loader = "text"
        path = "wiki.txt"
        split = "line"
        format = "text"

        [data.sums]
        loader = "json"
        path = "sums.json"
        format = "prompt"
        format_options = { prompt = "question" }

        [[stages]]
        name = "cpt"
        method = "cpt"
        data = "wiki"
        batch_size = 2
        block_size = 32
        epochs = 1

        [[stages]]
        name = "orpo"
        method = "orpo"
        data = "pairs"
        adapter = { type = "lora", r = 4, alpha = 8 }
        batch_size = 2
        epochs = 1
        max_length = 64

        [[stages]]
        name = "grpo"
        method = "grpo"
        data = "sums"
        epochs = 1
        batch_size = 4
        num_generations = 2
        max_completion_length = 8
        rewards = [{ reward = "regex", pattern = "[0-9]+" }]

        [[stages]]
        name = "reward"
        method = "reward"
        data = "pairs"
        adapter = { type = "lora", r = 4, alpha = 8 }
        batch_size = 2
        epochs = 1
        max_length = 64


        # Before training and after the three stages that leave a causal LM (the reward stage
        # leaves a classifier): four runs on the 4 documents.
        [[evaluate]]
        evaluator = "loss"
        data = "wiki"
        split = "all"
        before = true
        after = ["cpt", "orpo", "grpo"]

        [[evaluate]]
        evaluator = "generate"
        prompts = ["Hello", "Who are you?", "Count to three."]
        max_new_tokens = 4
        after = ["grpo"]
        """)
    return root


def _plan(folder: Path, *args: str) -> dict:
    result = run_ftp("plan", *args, "--json", cwd=folder)
    assert "Traceback" not in result.stderr, result.stderr
    return {"rc": result.returncode, "stderr": result.stderr, **json.loads(result.stdout)}


@pytest.fixture(scope="module")
def sft_over_budget(folder: Path) -> dict:
    """``ftp plan sft.toml --json`` against a budget no stage fits: every figure of the plan,
    and the refusal (the default budget's verdict is the preflight test's: it trains)."""
    return _plan(folder, "sft.toml", "--memory-budget", "0.0001")


@pytest.fixture(scope="module")
def several(folder: Path) -> dict:
    """``ftp plan several.toml --json``: cpt, orpo, grpo and reward stages, one probe each."""
    return _plan(folder, "several.toml")


def test_plan_probes_a_stage_and_gives_its_eta(sft_over_budget: dict) -> None:
    plan = sft_over_budget
    (stage,) = plan["stages"]
    assert stage["probe"]["ok"], stage["probe"]
    # 24 training rows, batch 4, 2 epochs; the longest batch's rows, as sft tokenizes them.
    assert stage["rows"] == 24 and stage["steps"] == 12
    assert 16 < stage["setting"]["sequence"] <= 48
    assert stage["measured_bytes"] > 0 and stage["seconds_per_step"] > 0
    # Two timed batches, the longest and a typical one; the ETA sums the fitted seconds of
    # every batch training runs (12 steps, no accumulation), plus the first step's warm-up
    # once; the upper bound takes every step at the longest batch's seconds.
    assert stage["probe"]["typical"] is not None, stage["probe"]
    fit, warmup = stage["step_fit"], stage["probe"]["warmup_seconds"]
    assert fit["a"] >= 0 and fit["b"] >= 0 and warmup >= 0
    assert stage["batches"] == 12
    assert plan["eta_seconds"] == pytest.approx(
        12 * fit["a"] + fit["b"] * stage["batch_tokens"] + warmup)
    assert plan["upper_bound_seconds"] >= 12 * stage["seconds_per_step"] + warmup - 1e-9
    assert plan["eta_seconds"] <= plan["upper_bound_seconds"] * (1 + 1e-9)
    # No evaluations: the whole pipeline's ETA is its training's.
    assert plan["evaluations"] == [] and plan["evaluation_seconds"] == 0
    assert plan["total_eta_seconds"] == plan["eta_seconds"]
    assert stage["estimate"]["total"] > 0


def test_a_stage_over_budget_exits_1_with_a_warning(sft_over_budget: dict) -> None:
    plan = sft_over_budget
    assert plan["rc"] == 1 and not plan["fits"]
    assert plan["budget_bytes"] == int(0.0001 * 1024 ** 3)
    assert "warning: stage 'sft' will not fit" in plan["stderr"]


def _metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_the_planned_batches_hold_what_training_sees(folder: Path,
                                                    sft_over_budget: dict) -> None:
    """sft trains padding-free: a step's tokens are its rows' sum, so over the run the planned
    batches hold exactly the tokens training counts (twice each kept row: two epochs)."""
    (stage,) = sft_over_budget["stages"]
    ran = run_ftp("run", "sft.toml", "-o", "sft-run", cwd=folder)
    assert ran.returncode == 0, ran.stderr
    records = [r for r in _metrics(folder / "sft-run") if r.get("stage") == "sft"
               and "step" in r]
    assert max(r["step"] for r in records) == stage["steps"] == 12
    assert max(r.get("tokens_seen") or 0 for r in records) == stage["batch_tokens"]


@pytest.mark.parametrize("method", ["orpo", "dpo", "reward"])
def test_preference_steps_are_the_ones_training_takes(folder: Path, method: str) -> None:
    """The plan counts steps over the pairs the method's trainer keeps: dpo and orpo fit
    every pair into max_length, the reward trainer leaves out the pairs over it (6 of 24
    here), which only its TRL trainer knows: the probe builds it and counts its rows."""
    tiny_pipeline(folder / f"{method}.toml", "model",
                  data_section("pairs", loader="json", path="pairs.json", format="preference"),
                  toml_table("[stages]", {"method": method, "data": "pairs", "adapter": LORA,
                                          "batch_size": 2, "epochs": 1, "max_length": 64}),
                  name=f"tiny-{method}", seed=1)
    plan = _plan(folder, f"{method}.toml")
    assert plan["rc"] == 0, plan["stderr"]
    (stage,) = plan["stages"]
    ran = run_ftp("run", f"{method}.toml", "-o", f"{method}-run", cwd=folder)
    assert ran.returncode == 0, ran.stderr
    records = [r for r in _metrics(folder / f"{method}-run") if r.get("stage") == method
               and "step" in r]
    assert max(r["step"] for r in records) == stage["steps"]
    assert stage["batches"] == stage["steps"]
    assert plan["eta_seconds"] <= plan["upper_bound_seconds"] * (1 + 1e-9)


def test_preflight_stops_before_training_and_runs_when_it_fits(folder: Path) -> None:
    refused = run_ftp("run", "sft.toml", "--preflight", "--memory-budget", "0.0001",
                      "-o", "refused", cwd=folder)
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    # The plan's terminal table, then the refusal.
    assert "stage  method" in refused.stdout and "ETA for training" in refused.stdout
    assert "ETA for the whole pipeline" in refused.stdout
    assert "warning: stage 'sft' will not fit" in refused.stderr
    assert "nothing was trained" in refused.stderr
    assert not (folder / "refused").exists()
    # Against the device's memory it fits, and the run goes on.
    ran = run_ftp("run", "sft.toml", "--preflight", "-o", "ran",
                  "--set", "stages[0].max_steps=1", cwd=folder)
    assert ran.returncode == 0, ran.stderr
    assert "will not fit" not in ran.stderr
    assert "ETA for training" in ran.stdout and (folder / "ran" / "model").is_dir()


def test_methods_that_drop_the_longest_rows_are_probed_on_rows_they_keep(several: dict
                                                                         ) -> None:
    assert several["rc"] == 0, several["stderr"]
    cpt, orpo, _, reward = several["stages"]
    for stage in (orpo, reward):
        assert stage["probe"]["ok"], stage["probe"]
        # Ranked among rows the method keeps: the first batch tried is one it trains on.
        assert stage["probe"]["tried"] == []
        assert stage["setting"]["sequence"] <= 64
        assert stage["setting"]["sequences_per_row"] == 2
    # The packed stage is estimated at its block size, not its 600-token documents.
    assert cpt["probe"]["ok"], cpt["probe"]
    assert cpt["setting"]["sequence"] == 32
    # Its rows are the 32-token blocks the documents are packed into, two per step.
    assert cpt["rows"] > 40 and cpt["steps"] == math.ceil(cpt["rows"] / 2)


def test_grpo_is_probed_with_its_completions(several: dict) -> None:
    assert several["rc"] == 0, several["stderr"]
    stage = several["stages"][2]
    assert stage["probe"]["ok"], stage["probe"]
    # Each of the 8 prompts gets 2 completions, 4 per step; a row holds prompt + completion.
    assert stage["rows"] == 16 and stage["steps"] == 4
    assert stage["setting"]["sequence"] > 8
    # The pipeline's training ETA is every stage's.
    assert several["eta_seconds"] == pytest.approx(sum(s["eta_seconds"]
                                                       for s in several["stages"]))


def test_evaluations_are_timed_on_a_sample_and_added_to_the_eta(several: dict) -> None:
    loss, generate = several["evaluations"]
    # The loss on all 4 documents (fewer than the sample) before training and after three
    # stages; the generation on its first prompt, scaled to its 3, after grpo.
    assert (loss["name"], loss["runs"], loss["scale"]) == ("loss", 4, 1.0)
    assert (generate["name"], generate["runs"], generate["scale"]) == ("generate", 1, 3.0)
    for e in (loss, generate):
        assert e["sample_seconds"] > 0
        assert e["seconds"] == pytest.approx(e["sample_seconds"] * e["scale"] * e["runs"])
    assert several["evaluation_seconds"] == pytest.approx(loss["seconds"] + generate["seconds"])
    assert several["total_eta_seconds"] == pytest.approx(several["eta_seconds"]
                                                         + several["evaluation_seconds"])


@pytest.mark.slow
@pytest.mark.parametrize(("example", "sequence", "steps"), [
    ("cpt.toml", 256, 12),  # SmolLM2-135M, LoRA, text packed into 256-token blocks
    ("sentiment.toml", 66, 375),  # all-MiniLM-L6-v2, full finetuning, a classifier
])
def test_an_example_is_estimated_near_what_it_measures(example: str, sequence: int,
                                                       steps: int) -> None:
    """The real models of two examples: the estimate within 40% of the probe's peak.

    The cpt estimate was once 28× the measured peak (it counted whole documents, not
    256-token blocks).
    """
    root = Path(__file__).resolve().parent.parent / "examples"
    plan = _plan(root, example)
    assert plan["rc"] == 0, plan["stderr"]
    (stage,) = plan["stages"]
    assert stage["setting"]["sequence"] == sequence and stage["steps"] == steps
    ratio = stage["estimate"]["total"] / stage["measured_bytes"]
    assert 0.6 < ratio < 1.4, (stage["estimate"], stage["measured_bytes"])


def test_orpo_is_probed_on_the_pairs_it_cuts_to_max_length(folder: Path) -> None:
    """Every fourth pair's prompt is over max_length = 64: orpo fits it (its prompt loses its
    start) and trains it at exactly 64 tokens, the longest shape its run trains. The probe
    once ranked those pairs last (a trainer might drop them) and timed a shorter batch, then a
    'typical' one of cut pairs nearly as long: the line through two timings 20 tokens apart
    made examples/orpo.toml's 6.6 s step a 35 s one."""
    tiny_pipeline(folder / "orpo-alone.toml", "model",
                  data_section("pairs", loader="json", path="pairs.json", format="preference"),
                  toml_table("[stages]", {"method": "orpo", "data": "pairs", "adapter": LORA,
                                          "batch_size": 2, "epochs": 1, "max_length": 64}),
                  name="tiny-orpo", seed=1)
    plan = _plan(folder, "orpo-alone.toml")
    assert plan["rc"] == 0, plan["stderr"]
    (orpo,) = plan["stages"]
    assert orpo["probe"]["ok"], orpo["probe"]
    assert orpo["setting"]["sequence"] == 64
    # The probe's batch: 2 pairs × 2 sequences × 64, the longest batch training runs.
    assert orpo["probe_batch_tokens"] == 2 * 2 * 64 == orpo["longest_batch_tokens"]
    # The run's trainer sees the same: it cuts those pairs to max_length and trains them all.
    ran = run_ftp("run", "orpo-alone.toml", "-o", "orpo-alone-run", "--set",
                  "stages[0].max_steps=1", cwd=folder)
    assert ran.returncode == 0, ran.stderr
    (tokenized,) = [r for r in _metrics(folder / "orpo-alone-run")
                    if r.get("event") == "tokenized"]
    assert tokenized["max_length"] == 64 and tokenized["truncated"] >= 6
    assert tokenized["examples"] == orpo["rows"] == 24


def test_the_probe_times_steps_until_two_agree(several: dict) -> None:
    """Each timed batch: 3 to 6 steps, stopped at the first two consecutive agreeing ones."""
    from ftp.planning.probe import LEAST_STEPS, settled, steady
    from ftp.planning.stages import PROBE_STEPS, PROBE_STEPS_GENERATING

    for stage in several["stages"]:
        probe = stage["probe"]
        cap = PROBE_STEPS_GENERATING if stage["method"] == "grpo" else PROBE_STEPS
        for times in [probe["steps"]] + ([probe["typical"]["steps"]] if probe["typical"]
                                         else []):
            assert LEAST_STEPS <= len(times) <= cap, (stage["stage"], times)
            # Stopped at the first settled prefix, or at the cap.
            assert not any(settled(times[:k]) for k in range(1, len(times)))
            assert settled(times) or len(times) == cap
        assert probe["seconds_per_step"] == pytest.approx(steady(probe["steps"])[0])


def test_steady_uses_the_last_two_steps_and_counts_the_rest_as_warmup() -> None:
    from ftp.planning.probe import settled, steady

    assert not settled([9.0, 2.0])  # never on the warm-up step and one more
    assert not settled([9.0, 3.0, 2.0])  # 3 and 2 differ by 50%
    assert settled([9.0, 3.0, 2.0, 2.1])
    assert steady([9.0, 3.0, 2.0, 2.1]) == pytest.approx((2.05, 6.95 + 0.95))
    # A step faster than the steady state is no negative warm-up.
    assert steady([1.0, 2.0, 2.0]) == pytest.approx((2.0, 0.0))
    # Two steps: the second is the steady state, the first's excess the warm-up.
    assert steady([5.0, 2.0]) == pytest.approx((2.0, 3.0))
    assert steady([4.0]) == pytest.approx((4.0, 0.0))


def test_a_line_is_never_fitted_through_two_batches_of_about_the_same_tokens() -> None:
    from ftp.planning.eta import fit_steps

    # examples/orpo.toml once: 1004 and 1024 tokens, 0.7 s apart → 35 s per 1024-token step.
    fit = fit_steps([(1004, 6.6), (1024, 7.3)])
    assert fit is not None and fit.seconds(1024) == pytest.approx(7.3)
    # Far apart, with the line crossing zero above zero tokens: proportional through the
    # longer batch, never above what it measured.
    fit = fit_steps([(400, 1.0), (1000, 5.0)])
    assert fit is not None and (fit.a, fit.seconds(1000)) == (0.0, pytest.approx(5.0))
    fit = fit_steps([(400, 3.0), (1000, 5.0)])
    assert fit is not None and fit.seconds(400) == pytest.approx(3.0)
    assert fit.seconds(1000) == pytest.approx(5.0)


def test_the_probe_peak_is_its_training_not_its_parents(folder: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe started from a process that holds far more memory than the probe's training
    reports its own training's peak: ``ru_maxrss`` carried the parent's high-water mark
    across subprocess's vfork and exec (the 3.20 vs 4.58 GiB of one SmolLM2 case)."""
    from ftp.config import load_pipeline
    from ftp.planning.stages import Invocation, prepare_data, stage_cost
    from ftp.plugins import load_plugins

    monkeypatch.chdir(folder)  # where `ftp plan` would run: the model's path is relative
    pipeline = load_pipeline(folder / "sft.toml", load_plugins((), only=None), [])
    provider = pipeline.model.build()
    data = prepare_data(pipeline)
    ballast = bytearray(768 * 1024 ** 2)
    for i in range(0, len(ballast), 4096):  # resident, page by page
        ballast[i] = 1
    cost = stage_cost(pipeline, 0, provider, provider.load_tokenizer(), data,
                      Invocation(folder / "sft.toml", []))
    del ballast
    assert cost.probe is not None and cost.probe["ok"], cost.probe
    assert 0 < cost.probe["peak_bytes"] < 256 * 1024 ** 2, cost.probe["peak_bytes"]
