# Placements (and float64 gradients) the torch backend's tensor parallel gives a model, reported per rank as JSON.
"""python -m torch.distributed.run --nproc_per_node 2 tests/torch_tp_placements.py OUT_JSON NAME=GENERATOR ...

For each NAME (the tiny preset's generator, or a model folder), builds the model, keeps its full weights, places it
with TorchBackend.setup (DTensor TP from the plan, then FSDP2) at --tp = the ranks, and writes OUT_JSON.<rank>:
{NAME: {"placements": {param: "Shard(dim=0)" | "Replicate()" | null}, "wrong_shards": [params whose local tensor
is not the plan's shard of the full weight], "checked": number of params compared, "float64": {"loss": relative
difference, "grad": largest relative gradient difference} of one batch in float64, TP (tensor_parallel.parallelize)
against the same model in this process unsharded}}.
"""
import json
import sys

import torch


def report(generator: str, tp: int) -> dict:
    from scaledown import ScaleDownConfig, ScaleDownModel
    from scaledown.parallel import ParallelPlan
    from scaledown.training.backends.torch_native.backend import TorchBackend
    from scaledown.training.backends.torch_native.tensor_parallel import placements
    values = {"preset": "tiny", "tensor_parallel_size": tp, "use_bf16": False, "output_dir": "/tmp/unused"}
    if generator != "tiny":
        values.update(generator_model_name=generator, compressor_type="n_layers", num_compressor_layers=1)
    config = ScaleDownConfig.from_dict(values)
    backend = TorchBackend(config)
    model = ScaleDownModel(config)
    full = {k: v.detach().clone() for k, v in model.state_dict().items()}
    plan = ParallelPlan.for_model(model, tp=tp)       # the shared plan's own shard arithmetic (NxD, converters)
    backend.setup(model)
    tp_rank = backend.mesh["tp"].get_local_rank()
    wrong, checked = [], 0
    from torch.distributed.tensor import DTensor
    for name, param in model.named_parameters(remove_duplicate=False):
        # FSDP2 over a data-parallel mesh of 1: the local tensor is this tp rank's whole shard
        local = param.to_local() if isinstance(param, DTensor) else param
        if not torch.equal(local.detach(), plan.shard(name, full[name], tp_rank)):
            wrong.append(name)
        checked += 1
    return {"placements": placements(model), "wrong_shards": wrong, "checked": checked, "float64": float64(config)}


def float64(config) -> dict:
    """One batch's loss and gradients under TP equal the unsharded model's in float64 (no float32 rounding to hide a
    wrong placement behind a tolerance): the largest relative differences."""
    import torch.nn.functional as F
    from torch.distributed.tensor import DTensor
    from scaledown import ScaleDownModel
    from scaledown.data.synthetic import generate_examples
    from scaledown.models.scaledown_model import add_gather_indices
    from scaledown.training.backends.torch_native import tensor_parallel as T

    def loss64(logits, labels):   # the models' own losses compute in float32
        out = F.cross_entropy(logits, labels, reduction="none", ignore_index=-100)
        return out.to_local() if isinstance(out, DTensor) else out

    from torch.distributed.device_mesh import init_device_mesh
    mesh = init_device_mesh("cpu", (int(__import__("os").environ["WORLD_SIZE"]),), mesh_dim_names=("tp",))
    reference, sharded = (ScaleDownModel(config).double().train() for _ in range(2))
    batch = add_gather_indices(reference.inputs.collate(generate_examples(4, seed=1)))
    T.parallelize(sharded, mesh)
    reference.token_loss = sharded.token_loss = loss64
    want = reference(batch)
    want.loss.backward()
    with T.loss_context_for(mesh.size())():
        got = sharded(batch)
        got.loss.backward()
    grads = dict(reference.named_parameters())
    worst, compared = 0.0, 0
    for name, param in sharded.named_parameters():
        if param.grad is not None:
            compared += 1
            grad = param.grad.full_tensor() if isinstance(param.grad, DTensor) else param.grad
            scale = grads[name].grad.abs().max().item() or 1.0
            worst = max(worst, (grad - grads[name].grad).abs().max().item() / scale)
    return {"loss": abs(got.loss.item() - want.loss.item()) / abs(want.loss.item()), "grad": worst,
            "compared": compared}


def main():
    import torch.distributed as dist
    out_json, *pairs = sys.argv[1:]
    results = {}
    for pair in pairs:
        name, _, generator = pair.partition("=")
        results[name] = report(generator, int(__import__("os").environ["WORLD_SIZE"]))
    rank = dist.get_rank()
    with open(f"{out_json}.{rank}", "w") as f:
        json.dump(results, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
