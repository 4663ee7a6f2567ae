# TEST DOUBLE of neuronx_distributed.optimizer.zero_redundancy_optimizer.NeuronZero1Optimizer (NxD 0.17).
"""torch-xla's ZeroRedundancyOptimizer (the double's) with NxD's gradient norm: the shards' squares, TP-sharded
parameters once and replicated ones / tp, summed over the TP, PP and sharding (data-parallel) groups
(NxD parallel_layers/grads.py::get_grad_norm with zero1_optimizer_groups)."""
from __future__ import annotations

import torch
import torch.distributed as dist

from neuronx_distributed.parallel_layers import parallel_state as ps
from torch_xla.distributed.zero_redundancy_optimizer import ZeroRedundancyOptimizer, _group


class NeuronZero1Optimizer(ZeroRedundancyOptimizer):
    def __init__(self, *args, **kwargs):
        if not ps.model_parallel_is_initialized():
            raise RuntimeError("initialize_model_parallel need to be called before creating NeuronZero1Optimizer")
        if kwargs.get("sharding_groups") is None:
            kwargs["sharding_groups"] = ps.get_data_parallel_replica_groups()
        super().__init__(*args, **kwargs)

    @torch.no_grad()
    def _clip_grad_norm(self, max_norm, norm_type=2.0) -> None:
        tp = ps.get_tensor_model_parallel_size()
        total = torch.zeros(1, dtype=self.optimizer_dtype)
        for param, shard in self._pairs():
            if shard.grad is None:
                continue
            square = shard.grad.detach().float().norm() ** 2
            total += square if getattr(param, "tensor_model_parallel", False) else square / tp
        if tp > 1:
            dist.all_reduce(total, group=ps.get_tensor_model_parallel_group())
        if ps.get_pipeline_model_parallel_size() > 1:
            dist.all_reduce(total, group=ps.get_pipeline_model_parallel_group())
        dist.all_reduce(total, group=_group(self._sharding_groups, self.global_rank))
        self._grad_norm = total.sqrt().detach().clone()
        coeff = float(max_norm) / (self._grad_norm + 1e-6)     # clip_grads_with_norm
        coeff = torch.where(coeff < 1, coeff, torch.ones_like(coeff))
        for group in self.base_optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.detach().mul_(coeff.to(p.grad.dtype))
