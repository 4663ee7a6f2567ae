# The NxD test double is as strict as NxD 0.17 / torch-xla 2.9 where the backend depends on it (issue 14).
"""Each test states the real behaviour and its source file (neuronx-distributed v2.28.0 src/neuronx_distributed/...,
torch-xla v2.9.0 torch_xla/...). Single-process checks run on a one-rank gloo group; the ones that need ranks
(fp32 reduction, padding_idx shards, pipeline shapes, the pipeline's DP reduction) share one 4-rank run."""
import os
import sys

import pytest
import torch
import torch.distributed as dist
from torch import nn

from conftest import ROOT

pytestmark = pytest.mark.nxd_double


@pytest.fixture
def nxd(tmp_path):
    """The double imported in this process on a one-rank gloo group, then removed again."""
    path, before = os.path.join(ROOT, "tests"), set(sys.modules)
    sys.path.insert(0, path)
    from nxd_double import install
    install()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    import neuronx_distributed as nxd
    yield nxd
    dist.destroy_process_group()
    sys.path.remove(path)
    for name in set(sys.modules) - before:
        if name.split(".")[0] in ("nxd_double", "torch_xla", "torch_neuronx", "neuronx_distributed"):
            del sys.modules[name]


def _config(nxd, zero1=True, bf16=True, max_grad_norm=1.0, checkpoint=None, meta=False, init_fn=None):
    return nxd.neuronx_distributed_config(
        optimizer_config={"zero_one_enabled": zero1, "grad_clipping": True, "max_grad_norm": max_grad_norm},
        mixed_precision_config={"use_master_weights": zero1 and bf16, "use_fp32_grad_acc": zero1 and bf16,
                                "use_master_weights_in_ckpt": False},
        activation_checkpoint_config=checkpoint,
        model_init_config={"meta_device_init": meta, "param_init_fn": init_fn})


def test_zero1_bf16_hook_leaves_gradients_in_main_grad(nxd):
    """torch_xla/distributed/zero_redundancy_optimizer.py _make_param_hook (use_grad_acc_hook, which NxD's
    trainer.py turns on with use_fp32_grad_acc): after backward the gradient is in fp32 param.main_grad and
    param.grad is None."""
    config = _config(nxd)
    model = nxd.initialize_parallel_model(config, lambda: nn.Linear(4, 2).to(torch.bfloat16))
    optimizer = nxd.initialize_parallel_optimizer(config, torch.optim.AdamW, model.parameters(), lr=1e-3)
    model(torch.ones(3, 4, dtype=torch.bfloat16)).float().sum().backward()
    weight = model.module.weight
    assert weight.grad is None
    assert weight.main_grad.dtype == torch.float32 and torch.equal(weight.main_grad, torch.full((2, 4), 3.0))
    optimizer.step()
    optimizer.zero_grad()
    assert torch.equal(weight.main_grad, torch.zeros(2, 4))


def test_zero1_clips_at_one_unless_max_norm_is_passed(nxd):
    """NxD's zero1_configs (trainer/trainer.py) leave optimizer_config["max_grad_norm"] out: torch-xla's
    ZeroRedundancyOptimizer clips at max_norm=None -> 1.0. A max_norm passed with the optimizer defaults is used."""
    moved = {}
    for passed in (None, 0.25):
        config = _config(nxd, bf16=False, max_grad_norm=0.25)
        model = nxd.initialize_parallel_model(config, lambda: nn.Linear(4, 1, bias=False))
        start = model.module.weight.detach().clone()
        extra = {} if passed is None else {"max_norm": passed}
        optimizer = nxd.initialize_parallel_optimizer(config, torch.optim.SGD, model.parameters(), lr=1.0, **extra)
        (model(torch.full((1, 4), 100.0)).sum()).backward()
        optimizer.step()
        moved[passed] = float((model.module.weight - start).detach().norm())
    assert moved[None] == pytest.approx(1.0, rel=1e-4) and moved[0.25] == pytest.approx(0.25, rel=1e-4)


def test_zero1_state_dict_is_torch_xla_layout_and_plain_dicts_fail(nxd):
    """ZeroRedundancyOptimizer.state_dict: wrapper state {} + base_state + shape_info; load_state_dict pops
    base_state, so a plain torch optimizer dict (what converters wrote before) raises KeyError."""
    config = _config(nxd, bf16=False)
    model = nxd.initialize_parallel_model(config, lambda: nn.Linear(4, 2))
    optimizer = nxd.initialize_parallel_optimizer(config, torch.optim.AdamW, model.parameters(), lr=1e-3)
    model(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    sd = optimizer.state_dict()
    assert sd["state"] == {} and set(sd["base_state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    assert sd["shape_info"] == {0: torch.Size([2, 4]), 1: torch.Size([2])}
    optimizer.load_state_dict(sd)
    plain = torch.optim.AdamW(nn.Linear(4, 2).parameters()).state_dict()
    with pytest.raises(KeyError, match="base_state"):
        optimizer.load_state_dict(plain)


def test_meta_init_replaces_parameters_only(nxd):
    """utils/model_utils.py reinit_model: parameters are replaced and param_init_fn runs; buffers are not touched,
    so a buffer left on the meta device fails the move to the device (model.to(xla) in move_model_to_device)."""
    class Rotary(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(2, 2)
            self.register_buffer("inv_freq", torch.arange(2.0), persistent=False)

    def zero(module, device):
        for p in module.parameters(recurse=False):
            p.data.zero_()

    def on_meta():
        with torch.device("meta"):   # what a model built from a description (a meta skeleton) looks like
            return Rotary()
    with pytest.raises(NotImplementedError, match="meta tensor"):
        nxd.initialize_parallel_model(_config(nxd, zero1=False, meta=True, init_fn=zero), on_meta)
    model = nxd.initialize_parallel_model(_config(nxd, zero1=False, meta=True, init_fn=zero), Rotary)
    assert torch.equal(model.module.inv_freq, torch.arange(2.0))   # built outside meta: parameters only on meta
    assert torch.equal(model.module.proj.weight, torch.zeros(2, 2))


def test_activation_checkpointing_is_reentrant(nxd):
    """utils/activation_checkpoint.py wraps with torch_xla.utils.checkpoint.checkpoint(use_reentrant=True): a
    checkpointed module whose inputs need no gradient gives its weights none (non-reentrant would)."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 3)

        def forward(self, x):
            return self.linear(x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.block, self.head = Block(), nn.Linear(3, 1)

        def forward(self, x):
            return self.head(self.block(x))
    model = nxd.initialize_parallel_model(_config(nxd, zero1=False, checkpoint=[Block]), Net)
    with pytest.warns(UserWarning, match="requires_grad"):
        model(torch.ones(2, 3)).sum().backward()
    net = model.module
    assert net.head.weight.grad is not None
    assert net.block._checkpoint_wrapped_module.linear.weight.grad is None


def test_backend_passes_its_clip_norm_to_zero1(nxd, monkeypatch):
    """The backend's side of the clip norm: under ZeRO-1 its --max_grad_norm reaches torch-xla's optimizer (NxD
    would leave 1.0). A loss comparison cannot show this: Adam's update barely depends on a uniform gradient scale
    (4 steps at 0.5 vs 1.0 differ by 2.5e-6 relative in the loss)."""
    from scaledown import ScaleDownModel
    from scaledown.training.backends.neuron.backend import NeuronBackend
    from conftest import tiny_config
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    cfg = tiny_config(zero1=True, use_bf16=False, max_grad_norm=0.5)
    backend = NeuronBackend(cfg)
    model = backend.build_model(lambda: ScaleDownModel(cfg))
    backend.prepare(model.parameter_groups(), lambda step: 1.0, 1)
    zero = backend.optimizer.optimizer
    assert type(zero).__name__ == "NeuronZero1Optimizer" and zero.max_norm == 0.5


def test_kv_groups_follow_nxd_arrange_kv_groups_and_the_backend_pairs_tp_ranks():
    """parallel_layers/parallel_state.py arrange_kv_groups (Trn1): global ranks i*tp + j stepping tp/m, which on
    Trn1's strided TP=4 groups pairs ranks of different TP groups; the backend's kv_replica_groups pairs the ranks
    of one TP group that hold the same KV heads (TP ranks r and r + tp/m, plan.kv_slots)."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "nxd_double"))
    try:
        from neuronx_distributed.parallel_layers.parallel_state import arrange_kv_groups
    finally:
        sys.path.pop(0)
        for name in [n for n in sys.modules if n.split(".")[0] == "neuronx_distributed"]:
            del sys.modules[name]
    from scaledown.parallel.layout import AttentionGeometry
    from scaledown.parallel.plan import kv_heads_of_rank
    from scaledown.training.backends.neuron.parallelize import kv_replica_groups
    from scaledown.parallel.nxd_ranks import RankGrid
    assert arrange_kv_groups(2, 4, 2) == [[0, 2], [1, 3], [4, 6], [5, 7]]
    grid = RankGrid(64, 4, 1, local_world_size=32)                 # Trn1 TP=4: TP groups [0, 8, 16, 24], ...
    ours = kv_replica_groups(grid.tp_groups(), {2})[2]
    assert ours[:2] == [[0, 16], [8, 24]]
    geometry = AttentionGeometry("generator", 8, 2, 16, kv_replication=2)
    tp_rank = {rank: grid.coords(rank)["tp"] for rank in range(64)}
    for group in ours:     # every group: one TP group, the same KV heads
        assert len({tuple(kv_heads_of_rank(geometry, 4, tp_rank[r])) for r in group}) == 1
        assert any(set(group) <= set(g) for g in grid.tp_groups())
    assert not any({0, 2} <= set(g) for g in grid.tp_groups())        # NxD's pairing crosses TP groups here


def _four_ranks(rank: int, store: str, results: str) -> None:
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from nxd_double import install
    install()
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=4)
    from neuronx_distributed.parallel_layers import ParallelEmbedding, RowParallelLinear, parallel_state as ps
    from neuronx_distributed.pipeline import NxDPPModel
    out = {}
    ps.initialize_model_parallel(tensor_model_parallel_size=4)
    # RowParallelLinear sums the partial products in fp32 (layers.py _rpl_maybe_reduce_output, reduce_dtype):
    # bf16 partials 256, 1, 1, 0 sum to 258; summed in bf16 they round back to 256
    row = RowParallelLinear(4, 1, bias=False, input_is_parallel=True, dtype=torch.bfloat16)
    with torch.no_grad():
        row.weight.fill_(1.0)
    out["row"] = float(row(torch.tensor([[[256.0], [1.0], [1.0], [0.0]][rank]], dtype=torch.bfloat16)))
    # ParallelEmbedding: padding_idx as the local row of the rank holding it, None elsewhere (layers.py)
    embedding = ParallelEmbedding(16, 2, padding_idx=5)
    out["padding_idx"] = embedding.padding_idx
    # NxDPPModel (pp 2, dp 2): shapes traced on the first call; DP reduction unless ZeRO-1 / the optimizer wrapper
    ps.initialize_model_parallel(tensor_model_parallel_size=1, pipeline_model_parallel_size=2)

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 4)

        def forward(self, x):
            return self.linear(x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.layers = nn.ModuleList([Layer(), Layer()])

        def forward(self, x):
            return self.layers[1](self.layers[0](x)).sum()
    for wrapper in (False, True):
        pp = NxDPPModel(Net(), transformer_layer_cls=Layer, num_microbatches=2, output_loss_value_spec=True,
                        input_names=["x"], auto_partition=True, use_optimizer_wrapper=wrapper)
        pp.run_train(x=torch.ones(4, 6, 4))
        out[f"dp_reductions_{wrapper}"] = pp.dp_reductions
    try:
        pp.run_train(x=torch.ones(4, 7, 4))
        out["other_shape"] = "ran"
    except RuntimeError as exc:
        out["other_shape"] = str(exc)
    torch.save(out, os.path.join(results, f"{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_parallel_layers_and_pipeline_on_four_ranks(tmp_path):
    import torch.multiprocessing as mp
    mp.spawn(_four_ranks, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=4)
    results = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(4)]
    assert [r["row"] for r in results] == [258.0] * 4
    assert [r["padding_idx"] for r in results] == [None, 1, None, None]
    for r in results:
        assert r["dp_reductions_False"] == 1 and r["dp_reductions_True"] == 0
        assert "keeps the traced inter-stage shapes" in r["other_shape"]
