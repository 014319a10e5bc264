"""``[distributed]``: validation with the rest of the file, the refusals, the translation into
TrainingArguments / a DeepSpeed config (a table of cases), and the decision to launch."""

import json
from pathlib import Path

import pytest

from ftp import Method, hookimpl
from ftp.config import load_pipeline
from ftp.distributed.config import DistributedSection, LaunchPlan, plan_of, problems_with
from ftp.distributed.launch import plan_for, threads_env
from ftp.distributed.translate import trainer_kwargs
from ftp.errors import ConfigError
from ftp.testing import config_problems, plugin_set, run_ftp, write_pipeline
from ftp_builtin.launchers import torchrun_args

HEAD = """
[pipeline]
name = "d"

[model]
path = "some-model"

[data.x]
loader = "json"
path = "data.json"
format = "alpaca"

[[stages]]
method = "sft"
data = "x"
{adapter}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "data.json").write_text(json.dumps([{"instruction": "a", "output": "b"}]))
    return tmp_path


def load(project: Path, table: str, adapter: str = "", plugins: tuple = ()) -> object:
    path = write_pipeline(project / "p.toml", HEAD.format(adapter=adapter) + table)
    return load_pipeline(path, plugin_set(*plugins))


def problems(project: Path, table: str, adapter: str = "", plugins: tuple = ()) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load(project, table, adapter, plugins)
    return [str(p) for p in err.value.problems]


def section(**values: object) -> DistributedSection:
    return DistributedSection.model_validate(values)


# -- the translation, a table of cases ------------------------------------------------------

AUTO_DS = {"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
           "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
           "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"}}
DDP_CPU = {"ddp_timeout": 1800, "ddp_backend": "gloo", "ddp_find_unused_parameters": False}
DDP_GPU = {**DDP_CPU, "ddp_backend": "nccl"}
FSDP_DEFAULT = {"version": 2, "reshard_after_forward": True, "cpu_offload": False,
                "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "activation_checkpointing": False,
                "state_dict_type": "FULL_STATE_DICT"}

CASES = [
    ("ddp on CPU", {}, False, DDP_CPU),
    ("ddp on GPUs", {}, True, DDP_GPU),
    ("ddp options and timeout",
     {"timeout_minutes": 5, "ddp": {"backend": "gloo", "find_unused_parameters": True,
                                    "bucket_cap_mb": 50, "broadcast_buffers": False}},
     True, {"ddp_timeout": 300, "ddp_backend": "gloo", "ddp_find_unused_parameters": True,
            "ddp_bucket_cap_mb": 50, "ddp_broadcast_buffers": False}),
    ("fsdp defaults", {"strategy": "fsdp"}, True,
     {**DDP_GPU, "fsdp": True, "fsdp_config": FSDP_DEFAULT}),
    ("fsdp shard_grad_op, offload, size wrap, checkpointing",
     {"strategy": "fsdp", "fsdp": {"sharding": "shard_grad_op", "cpu_offload": True,
                                   "auto_wrap": "size", "min_params": 1000,
                                   "activation_checkpointing": True}}, True,
     {**DDP_GPU, "fsdp": True, "fsdp_config": {
         "version": 2, "reshard_after_forward": False, "cpu_offload": True,
         "auto_wrap_policy": "SIZE_BASED_WRAP", "min_num_params": 1000,
         "activation_checkpointing": True, "state_dict_type": "FULL_STATE_DICT"}}),
    ("fsdp without wrapping", {"strategy": "fsdp", "fsdp": {"auto_wrap": "none"}}, True,
     {**DDP_GPU, "fsdp": True, "fsdp_config": {**FSDP_DEFAULT, "auto_wrap_policy": "NO_WRAP"}}),
    ("deepspeed defaults: ZeRO-2", {"strategy": "deepspeed"}, True,
     {**DDP_GPU, "deepspeed": {**AUTO_DS, "zero_optimization": {
         "stage": 2, "overlap_comm": True, "contiguous_gradients": True}}}),
    ("deepspeed ZeRO-0", {"strategy": "deepspeed", "deepspeed": {"zero_stage": 0}}, True,
     {**DDP_GPU, "deepspeed": {**AUTO_DS, "zero_optimization": {"stage": 0}}}),
    ("deepspeed ZeRO-3 with both offloads",
     {"strategy": "deepspeed", "deepspeed": {"zero_stage": 3, "offload_optimizer": True,
                                             "offload_params": True}}, True,
     {**DDP_GPU, "deepspeed": {**AUTO_DS, "zero_optimization": {
         "stage": 3, "overlap_comm": True, "contiguous_gradients": True,
         "offload_optimizer": {"device": "cpu", "pin_memory": True},
         "offload_param": {"device": "cpu", "pin_memory": True},
         "stage3_gather_16bit_weights_on_model_save": True}}}),
    ("deepspeed JSON file", {"strategy": "deepspeed", "deepspeed": {"config": "ds.json"}}, True,
     {**DDP_GPU, "deepspeed": str(Path("/proj") / "ds.json")}),
]


@pytest.mark.parametrize(("values", "on_gpu", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_translation(values: dict, on_gpu: bool, expected: dict) -> None:
    assert trainer_kwargs(section(**values), on_gpu, Path("/proj")) == expected


def test_no_table_no_options() -> None:
    assert trainer_kwargs(None, True) == {}


def test_translation_names_real_training_arguments() -> None:
    import dataclasses

    from transformers import TrainingArguments

    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    for _, values, on_gpu, _ in CASES:
        assert set(trainer_kwargs(section(**values), on_gpu)) <= fields


# -- validation --------------------------------------------------------------------------------


def test_a_valid_table_and_its_plan(project: Path) -> None:
    p = load(project, '[distributed]\nnproc_per_node = 2\ntimeout_minutes = 3\n')
    assert p.distributed.strategy == "ddp"  # type: ignore[attr-defined]
    assert p.launcher.entry.name == "torchrun"  # type: ignore[attr-defined]
    assert plan_of(p.distributed) == LaunchPlan(2, 1, 0, None, 3.0)  # type: ignore[attr-defined]


def test_every_problem_at_once_with_its_path(project: Path) -> None:
    found = problems(project, """
[distributed]
nproc_per_node = 0
nnodes = 2
node_rank = 2
rdzv_endpoint = "no-port"
strategy = "ddp"
fsdp = { sharding = "full" }
nprocs = 2
""")
    joined = "\n".join(found)
    assert "distributed.nproc_per_node: " in joined and "'auto'" in joined
    assert "distributed.node_rank: must be below nnodes = 2" in joined
    assert "distributed.rdzv_endpoint: Value error, give HOST:PORT" in joined
    assert "distributed.fsdp: is read only with strategy = 'fsdp'" in joined
    assert "distributed.nprocs" in joined


def test_several_nodes_need_a_rendezvous(project: Path) -> None:
    found = problems(project, "[distributed]\nnnodes = 2\n")
    assert found == ["distributed.rdzv_endpoint: nnodes = 2 needs the HOST:PORT of node 0, "
                     "where the processes of every machine meet"]


@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed"])
def test_sharded_strategies_refused_without_a_gpu(project: Path, strategy: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The HF Trainer would silently fall back to DDP on CPU: never allowed."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    found = problems(project, f'[distributed]\nstrategy = "{strategy}"\n')
    assert any(f.startswith("distributed.strategy: ") and "needs GPUs and none is visible" in f
               and "silently" in f for f in found), found


def test_gpus_are_counted_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    from ftp.distributed.config import visible_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert visible_gpus() == 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == 0
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    devices = [p for p in Path("/dev").glob("nvidia[0-9]*") if p.name[6:].isdigit()]
    assert visible_gpus() == len(devices)


def deepspeed_problems(project: Path, table: str, adapter: str = "",
                       plugins: tuple = ()) -> list[str]:
    """The DeepSpeed problems as on a machine with 2 GPUs and DeepSpeed (not this one)."""
    p_text = HEAD.format(adapter=adapter)
    path = write_pipeline(project / "p.toml", p_text)
    stages = load_pipeline(path, plugin_set(*plugins)).stages
    sec = DistributedSection.model_validate({"strategy": "deepspeed", "deepspeed": table})
    return [str(p) for p in problems_with(sec, stages, project, gpus=2)
            if "not installed" not in p.message]


def test_zero3_refused_with_an_adapter(project: Path) -> None:
    found = deepspeed_problems(project, {"zero_stage": 3}, adapter="adapter = { r = 4 }")
    assert found == ["stages[0].adapter: ZeRO-3 shards the base weights, and ftp merges the "
                     "adapter into whole weights after the stage: use zero_stage = 2 (or FSDP) "
                     "with an adapter"]
    assert deepspeed_problems(project, {"zero_stage": 2}, adapter="adapter = { r = 4 }") == []


class WholeWeights(Method):
    """A method that reads whole weights itself, so it declares it cannot run under ZeRO-3."""

    name = "whole-weights"
    accepts = frozenset({"conversational"})
    zero3 = False


class Plugin:
    @staticmethod
    @hookimpl
    def ftp_methods() -> list:
        return [WholeWeights]


def test_zero3_refused_for_a_method_that_says_it_cannot(project: Path) -> None:
    text = HEAD.replace('method = "sft"', 'method = "whole-weights"').format(adapter="")
    path = write_pipeline(project / "p.toml", text)
    stages = load_pipeline(path, plugin_set(Plugin)).stages
    sec = section(strategy="deepspeed", deepspeed={"zero_stage": 3})
    found = [str(p) for p in problems_with(sec, stages, project, gpus=2)
             if "not installed" not in p.message]
    assert found == ["stages[0].method: method 'whole-weights' cannot train under ZeRO-3 (it "
                     "says so); use zero_stage = 2"]


def test_offloading_weights_needs_zero3(project: Path) -> None:
    found = deepspeed_problems(project, {"zero_stage": 2, "offload_params": True})
    assert found == ["distributed.deepspeed.offload_params: weights can be offloaded only when "
                     "ZeRO shards them (zero_stage = 3; it is 2)"]


def test_deepspeed_json_is_read_for_its_stage(project: Path) -> None:
    (project / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    found = deepspeed_problems(project, {"config": "ds.json"}, adapter="adapter = { r = 4 }")
    assert len(found) == 1 and found[0].startswith("stages[0].adapter: ZeRO-3")
    assert deepspeed_problems(project, {"config": "missing.json"}) == [
        f"distributed.deepspeed.config: file not found: {project / 'missing.json'}"]
    mixed = deepspeed_problems(project, {"config": "ds.json", "zero_stage": 2})
    assert mixed == ["distributed.deepspeed.zero_stage: set it in the DeepSpeed JSON file, or "
                     "leave out `config`: ftp does not merge the two"]


def test_deepspeed_missing_is_refused(project: Path) -> None:
    from ftp.distributed.config import deepspeed_installed

    if deepspeed_installed():
        pytest.skip("DeepSpeed is installed here")
    sec = section(strategy="deepspeed")
    found = [str(p) for p in problems_with(sec, [], project, gpus=2)]
    assert found == ["distributed.strategy: DeepSpeed is not installed: pip install deepspeed "
                     "(or use strategy = 'fsdp')"]


def test_validate_reports_through_the_cli(project: Path) -> None:
    write_pipeline(project / "p.toml", HEAD.format(adapter="") +
                   '[distributed]\nstrategy = "fsdp"\nnode_rank = 1\n')
    found = config_problems(run_ftp("validate", "p.toml", cwd=project, CUDA_VISIBLE_DEVICES=""))
    assert found[0].startswith("distributed.node_rank: must be below nnodes = 1")
    assert found[1].startswith("distributed.strategy: FSDP needs GPUs and none is visible")


def test_nproc_option_is_validated_as_the_table(project: Path) -> None:
    write_pipeline(project / "p.toml", HEAD.format(adapter="") +
                   '[distributed]\nstrategy = "deepspeed"\n')
    found = config_problems(run_ftp("run", "p.toml", "--nproc", "2", cwd=project,
                                    CUDA_VISIBLE_DEVICES=""))
    assert any("DeepSpeed needs GPUs" in f for f in found)


def test_schema_lists_the_table() -> None:
    from ftp.schema import pipeline_schema

    ps = plugin_set()
    schema = pipeline_schema(ps.registry)
    variants = schema["properties"]["distributed"]["anyOf"]
    assert [v["title"] for v in variants] == ["launcher = 'torchrun'"]
    props = variants[0]["properties"]
    assert {"strategy", "nproc_per_node", "nnodes", "node_rank", "rdzv_endpoint",
            "timeout_minutes", "ddp", "fsdp", "deepspeed"} <= set(props)


# -- the decision to launch --------------------------------------------------------------------


def test_launch_only_when_several_processes_and_no_launcher(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert plan_for(load(project, "")) is None  # type: ignore[arg-type]
    assert plan_for(load(project, "[distributed]\nnproc_per_node = 1\n")) is None  # type: ignore[arg-type]
    two = load(project, "[distributed]\nnproc_per_node = 2\n")
    assert plan_for(two) == LaunchPlan(2)  # type: ignore[arg-type]
    # Started by torchrun, srun or accelerate launch: never launches again.
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert plan_for(two) is None  # type: ignore[arg-type]


def test_auto_is_one_process_per_gpu() -> None:
    assert plan_of(section(nproc_per_node="auto"), gpus=4).nproc_per_node == 4
    assert plan_of(section(nproc_per_node="auto"), gpus=0).nproc_per_node == 1


def test_torchrun_arguments() -> None:
    assert torchrun_args(LaunchPlan(2)) == ["--standalone", "--nproc-per-node=2",
                                            "--max-restarts=0"]
    assert torchrun_args(LaunchPlan(1, 2, 1, "10.0.0.1:29500", 2.0)) == [
        "--nproc-per-node=1", "--max-restarts=0", "--nnodes=2", "--node-rank=1",
        "--rdzv-backend=static", "--rdzv-endpoint=10.0.0.1:29500", "--rdzv-conf=timeout=120"]


def test_threads_shared_out(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads_env(LaunchPlan(2)) == {
        "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // 2))}
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads_env(LaunchPlan(2)) == {}
