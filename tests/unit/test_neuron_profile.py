# NxD backend pieces that need no NxD: config dict, rank profile, micro-batches, version checks, profiles, partition cuts.
import glob
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, tiny_config
from scaledown.errors import ConfigError
from scaledown.training.backends.neuron.nxd_config import mixed_precision, nxd_config_kwargs, resolve_microbatches
from scaledown.training.backends.neuron.stack import check_versions
from scaledown.training.batching import plan_batches
from scaledown.training.backends.neuron.profile_file import NeuronProfile
from scaledown.parallel.nxd_ranks import RankGrid


def nxd_formula(world, tp, pp, cp=1):
    """NxD's row-major [PP, DP, CP, TP] coordinates (reference notes section 1)."""
    dp = world // (tp * pp * cp)
    return [{"tp": r % tp, "dp": (r // (tp * cp)) % dp, "pp": r // (dp * cp * tp)} for r in range(world)]


@pytest.mark.parametrize("world,tp,pp", [(32, 8, 4), (64, 8, 1), (64, 32, 1), (16, 2, 2)])
def test_rank_grid_follows_nxd_reshape(world, tp, pp):
    grid = RankGrid(world, tp, pp, local_world_size=32)
    for rank, expected in enumerate(nxd_formula(world, tp, pp)):
        got = grid.coords(rank)
        assert (got["tp"], got["dp"], got["pp"]) == (expected["tp"], expected["dp"], expected["pp"])
    assert grid.loss_rank() == (pp - 1) * grid.dp * tp


def test_trn1_tp4_uses_strided_intra_node_groups():
    grid = RankGrid(64, 4, 1, local_world_size=32)
    assert grid.tp_groups()[:2] == [[0, 8, 16, 24], [1, 9, 17, 25]]
    assert grid.tp_groups()[8] == [32, 40, 48, 56]
    assert grid.dp_groups()[0] == [0, 1, 2, 3, 4, 5, 6, 7, 32, 33, 34, 35, 36, 37, 38, 39]


def test_degrees_not_dividing_the_world_name_every_factor():
    with pytest.raises(ConfigError, match=r"24 ranks .* tensor_parallel_size 8 x pipeline_parallel_size 2 = 16"):
        RankGrid(24, 8, 2, local_world_size=8)


def test_microbatches_must_divide_the_rank_batch():
    plan = plan_batches(32, 4, 2)                 # 16 per rank, accumulation 4
    assert resolve_microbatches(tiny_config(), plan) == 4
    assert resolve_microbatches(tiny_config(num_microbatches=8), plan) == 8
    with pytest.raises(ConfigError, match=r"num_microbatches=3 does not divide the 16 examples .* 1, 2, 4, 8, 16"):
        resolve_microbatches(tiny_config(num_microbatches=3), plan)


def test_nxd_config_from_ours():
    cfg = tiny_config(tensor_parallel_size=2, pipeline_parallel_size=2, zero1=True, use_bf16=True, max_grad_norm=0.5,
                      gradient_checkpointing=True)
    kwargs = nxd_config_kwargs(cfg, layer_classes=[torch.nn.Linear], num_microbatches=4, meta_device_init=False)
    assert kwargs["tensor_parallel_size"] == 2 and kwargs["pipeline_parallel_size"] == 2
    assert kwargs["optimizer_config"] == {"zero_one_enabled": True, "grad_clipping": True, "max_grad_norm": 0.5}
    assert kwargs["mixed_precision_config"]["use_master_weights"] is True
    assert kwargs["activation_checkpoint_config"] == [torch.nn.Linear]
    pipe = kwargs["pipeline_config"]
    assert pipe["auto_partition"] and pipe["num_microbatches"] == 4 and pipe["transformer_layer_cls"] is torch.nn.Linear
    assert kwargs["model_init_config"]["param_init_fn"] is None
    # NxD refuses master weights without ZeRO-1
    assert mixed_precision(tiny_config(zero1=False, use_bf16=True))["use_master_weights"] is False
    with pytest.raises(ConfigError, match="one decoder-layer class"):
        nxd_config_kwargs(cfg, layer_classes=[torch.nn.Linear, torch.nn.Conv1d], num_microbatches=4,
                          meta_device_init=False)


def test_sequence_parallel_needs_tensor_parallelism():
    with pytest.raises(ConfigError, match="sequence_parallel=True needs tensor_parallel_size > 1"):
        tiny_config(sequence_parallel=True)


def test_neuron_versions_are_checked_before_anything_runs():
    good = {"neuronx-distributed": "0.17.0", "torch-neuronx": "2.9.0.2.12.0", "torch-xla": "2.9.0"}
    check_versions(good)
    with pytest.raises(ConfigError, match=r"neuronx-distributed 0\.18\.0 is installed but Neuron 2\.28 needs 0\.17\.x"):
        check_versions({**good, "neuronx-distributed": "0.18.0"})
    with pytest.raises(ConfigError, match="torch-neuronx is not installed.*extra-index-url"):
        check_versions({**good, "torch-neuronx": None})


def test_backend_without_neuron_says_how_to_install(config):
    from scaledown.training.backends.neuron.backend import NeuronBackend
    with pytest.raises(ConfigError, match="needs the Neuron 2.28 stack"):
        NeuronBackend(config)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "neuron_configs", "*.json"))))
def test_shipped_layouts_load(path):
    profile = NeuronProfile.from_file(path)
    assert profile.processes_per_node == 32 and "FI_PROVIDER" in profile.environment()
    assert os.path.basename(path).startswith(f"tp{profile.settings['tensor_parallel_size']}_"
                                             f"pp{profile.settings['pipeline_parallel_size']}")


def test_layout_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"tensor_parallel_size": 8, "procs": 4}')
    with pytest.raises(ConfigError, match=r"bad.json: unknown key\(s\) procs"):
        NeuronProfile.from_file(str(bad))
    shipped = ", ".join(sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "neuron_configs", "*.json"))))
    with pytest.raises(ConfigError, match=f"does not exist.*shipped: {shipped}"):
        NeuronProfile.from_file(str(tmp_path / "missing.json"))


@pytest.mark.parametrize("pp", [2, 3, 4])
def test_nxd_auto_partition_of_the_pipeline_module_equals_the_plan(pp):
    """NxD finds decoder layers by registration order (get_model_layers) and cuts with create_partitions; the
    pipeline module registers the compressor first, so the cuts are the plan's (compressor layers, then generator)."""
    from scaledown.checkpoint.description import ModelDescription
    from scaledown.parallel import ParallelPlan
    from scaledown.training.backends.neuron.batches import PipelineModule
    from scaledown.training.backends.neuron.parallelize import layer_classes
    import importlib.util   # NxD's partition file of the double, loaded alone (no torch_xla on sys.path)
    spec = importlib.util.spec_from_file_location("nxd_partition", os.path.join(
        ROOT, "tests", "nxd_double", "neuronx_distributed", "pipeline", "partition.py"))
    partition = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(partition)
    create_partitions = partition.create_partitions

    def get_model_layers(module, kind, path=()):   # NxDPPModel.get_model_layers, transcribed (NxD 0.17)
        found = []
        for name, child in module.named_children():
            found += [".".join(path + (name,))] if isinstance(child, kind) else get_model_layers(child, kind, path + (name,))
        return found
    skeleton = ModelDescription.from_config(tiny_config()).skeleton()
    plan = ParallelPlan.for_model(skeleton, 1, pp)
    layers = get_model_layers(PipelineModule(skeleton), tuple(layer_classes(skeleton, plan)))
    assert layers == plan.layer_names
    assert create_partitions(pp, layers) == plan.pipeline_cuts


def test_dry_run_prints_layout_batches_and_commands(subprocess_env):
    proc = subprocess.run([sys.executable, "launchers/train_trn1.py", "--dry_run", "--neuron_config",
                           "neuron_configs/tp8_pp4.json", "--nnodes", "2", "--precompile", "--max_steps", "50",
                           "--generator_warmup_ratio", "0"],   # PP refuses the tiny preset's warm-up, as the run does
                          cwd=ROOT, env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "world 64 = pp 4 x dp 2 x tp 8" in out and "loss / logging rank: 48" in out
    assert "global batch 32 = micro batch 8 x accumulation 2 x data-parallel ranks 2" in out
    assert "torchrun --nnodes 2 --nproc_per_node 32" in out and "--max_steps 50" in out
    assert "precompile: " in out and "neuron_parallel_compile torchrun" in out and "FI_PROVIDER=efa" in out


def test_dry_run_refuses_a_tp_that_does_not_divide_the_heads(subprocess_env):
    proc = subprocess.run([sys.executable, "launchers/train_trn1.py", "--dry-run", "--neuron_config",
                           "neuron_configs/tp32_pp1.json"], cwd=ROOT, env=subprocess_env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0
    assert "does not divide the generator's 8 attention heads" in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture
def nxd_double_imported():
    """The NxD double importable in this process for one test, then gone (other tests check torch_xla is absent)."""
    path, before = os.path.join(ROOT, "tests"), set(sys.modules)
    sys.path.insert(0, path)
    from nxd_double import install
    install()
    yield
    sys.path.remove(path)
    for name in set(sys.modules) - before:
        if name.split(".")[0] in ("nxd_double", "torch_xla", "torch_neuronx", "neuronx_distributed"):
            del sys.modules[name]


@pytest.mark.nxd_double
@pytest.mark.parametrize("pp", [2, 3, 4])
def test_nxd_fx_partition_puts_every_weight_on_the_plans_stage(pp, nxd_double_imported):
    """What NxDPPModel.partition does (fx trace through the NxD double's trace_model with our tracer and leaf modules,
    cut nodes marked, split_module): each weight must land in exactly one stage, the one the plan (and so the
    converters) assign; a weight read outside a leaf module would stay in no stage and NxD would freeze it."""
    from torch.fx.passes.split_module import split_module
    from neuronx_distributed.pipeline.trace import TorchTracerWrapper, trace_model
    from scaledown.models.scaledown_model import ScaleDownModel
    from scaledown.parallel import ParallelPlan
    from scaledown.training.backends.neuron.batches import PipelineModule
    from scaledown.training.backends.neuron.nxd_config import PIPELINE_INPUTS
    from scaledown.training.backends.neuron.parallelize import layer_classes
    from scaledown.training.backends.neuron.trace import leaf_module_names, tracer_class
    model = ScaleDownModel(tiny_config())
    plan = ParallelPlan.for_model(model, 1, pp)
    leaves = leaf_module_names(model, plan.layer_names) + [c.__name__ for c in layer_classes(model, plan)]
    traced = trace_model(PipelineModule(model), input_names=list(PIPELINE_INPUTS),
                         tracer_cls=tracer_class(TorchTracerWrapper), leaf_modules=leaves)
    stage, cuts = 0, set(plan.pipeline_cuts)
    for node in traced.graph.nodes:   # NxD's partition_traced_model: a cut layer is the last node of its stage
        node.meta["partition"] = stage
        stage += int(node.op == "call_module" and node.target in cuts)
    qualname_map = {}
    split = split_module(traced, None, lambda node: node.meta["partition"], qualname_map=qualname_map,
                         keep_original_order=True)
    owner = {}
    for local, original in qualname_map.items():
        submodule, _, path = local.partition(".")
        for name, _ in split.get_submodule(submodule).get_submodule(path).named_parameters():
            owner.setdefault(f"{original}.{name}", []).append(int(submodule[len("submod_"):]))
    expected = {name: [plan.stage_of(name)] for name, _ in model.named_parameters()}
    assert owner == expected
