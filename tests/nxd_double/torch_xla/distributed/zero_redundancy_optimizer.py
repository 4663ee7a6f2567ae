# TEST DOUBLE of torch_xla.distributed.zero_redundancy_optimizer.ZeroRedundancyOptimizer (torch-xla 2.9), over gloo.
"""What the real class does (torch_xla/distributed/zero_redundancy_optimizer.py at v2.9.0), eagerly on CPU:

- every parameter is padded on dim 0 to a multiple of the sharding-group size and this rank keeps its chunk,
  cast to optimizer_dtype (fp32 by default): the base optimizer steps these master shards;
- use_grad_acc_hook: a hook on each parameter's AccumulateGrad node adds param.grad (as optimizer_dtype) into a
  full-shape `main_grad` (param.main_grad is shard.main_grad) and sets param.grad = None;
- step: full gradients (main_grad, or param.grad) are reduce-scattered with scale 1 / group size (a mean), the
  shard gradients clipped to `max_norm` (1.0 when None: the constructor's default) when grad_clipping, the base
  optimizer steps, the shards are all-gathered back into the parameters (cast to their dtype);
- state_dict: torch's Optimizer.state_dict of the full parameters (no state) + `base_state` (the shards' state)
  + `shape_info`; load_state_dict pops `base_state` (KeyError on a plain optimizer dict), as the real one.
"""
from __future__ import annotations

import copy
from typing import Any, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _group(groups, rank: int):
    from neuronx_distributed.parallel_layers import parallel_state as ps
    return ps.group_for_ranks(next(g for g in groups if rank in g))


class ZeroRedundancyOptimizer(torch.optim.Optimizer):
    def __init__(self, params, optimizer_class, optimizer_dtype=None, grad_clipping: bool = True,
                 max_norm: Optional[float] = None, pin_layout: bool = True, sharding_groups=None,
                 grad_norm_groups=None, lazy_init: bool = False, bucket_cap_mb_all_gather: int = 0,
                 bucket_cap_mb_reduce_scatter: int = 0, use_grad_acc_hook: bool = False,
                 save_master_weights: bool = False, higher_cc_precision: bool = False, **defaults: Any):
        super().__init__(params, defaults)
        self.global_rank = dist.get_rank()
        self._sharding_groups = [list(range(dist.get_world_size()))] if sharding_groups is None else sharding_groups
        self._grad_norm_groups = grad_norm_groups
        self.optimizer_class = optimizer_class
        self.defaults = defaults
        self.optimizer_dtype = optimizer_dtype if optimizer_dtype is not None else torch.float32
        self.grad_clipping = grad_clipping
        self.max_norm = max_norm if max_norm is not None else 1.0     # the real default when none is passed
        self.save_master_weights = save_master_weights
        self.higher_cc_precision = higher_cc_precision
        self.use_grad_acc_hook = use_grad_acc_hook
        self.grad_accs, self.grad_acc_hooks = [], []
        self._grad_norm = None
        self.inited = False
        if not lazy_init:
            self.init_zero()

    def init_zero(self):
        self.remove_hooks()
        self.local_world_size = len(self._sharding_groups[0])
        self.local_rank = next(g.index(self.global_rank) for g in self._sharding_groups if self.global_rank in g)
        self.base_optimizer = self.optimizer_class(self._shard_parameters(), **self.defaults)
        self._sync_param_groups(self.param_groups, self.base_optimizer.param_groups)
        self.inited = True

    @property
    def grad_norm(self):
        return self._grad_norm

    @property
    def sharding_groups(self):
        return self._sharding_groups

    @staticmethod
    def _sync_param_groups(src, dst) -> None:
        for s, d in zip(src, dst):
            for key in s:
                if key != "params":
                    d[key] = s[key]

    def _pad(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.size(0) % self.local_world_size:
            tensor = F.pad(tensor, [0, 0] * (tensor.dim() - 1) + [0, self.local_world_size - tensor.size(0) %
                                                                 self.local_world_size])
        return tensor

    def _shard_parameters(self):
        groups = []
        for group in self.param_groups:
            shards = []
            for param in group["params"]:
                data = self._pad(param.data.detach().cpu()).chunk(self.local_world_size)[self.local_rank]
                shard = torch.nn.Parameter(data.to(self.optimizer_dtype).clone(), requires_grad=param.requires_grad)
                if self.use_grad_acc_hook:
                    self._register_hook(param, shard)
                shards.append(shard)
            sharded = copy.copy(group)
            sharded["params"] = shards
            groups.append(sharded)
        return groups

    def _make_param_hook(self, param, shard):
        def hook(*unused):
            if param.grad is not None:
                if not hasattr(shard, "main_grad"):
                    shard.main_grad = torch.zeros(param.shape, dtype=self.optimizer_dtype)
                    param.main_grad = shard.main_grad
                shard.main_grad.add_(param.grad.data.to(dtype=self.optimizer_dtype))
                param.grad = None
        return hook

    def _register_hook(self, param, shard):
        grad_acc = param.expand_as(param).grad_fn.next_functions[0][0]    # the parameter's AccumulateGrad node
        self.grad_acc_hooks.append(grad_acc.register_hook(self._make_param_hook(param, shard)))
        self.grad_accs.append(grad_acc)

    def remove_hooks(self):
        for hook in self.grad_acc_hooks:
            hook.remove()
        self.grad_acc_hooks, self.grad_accs = [], []

    def _has_grad(self, param, shard) -> bool:
        return param.grad is not None or (self.use_grad_acc_hook and hasattr(shard, "main_grad"))

    def _pairs(self):
        for group, sharded in zip(self.param_groups, self.base_optimizer.param_groups):
            yield from zip(group["params"], sharded["params"])

    def _reduce_gradients(self):
        self._sync_param_groups(self.param_groups, self.base_optimizer.param_groups)
        group = _group(self._sharding_groups, self.global_rank)
        for param, shard in self._pairs():
            if not self._has_grad(param, shard):
                continue
            full = self._pad(shard.main_grad if self.use_grad_acc_hook else param.grad).clone()
            if self.higher_cc_precision:
                full = full.to(self.optimizer_dtype)
            dist.all_reduce(full, group=group)     # reduce_scatter = the sum's chunk of this rank
            shard.grad = (full.chunk(self.local_world_size)[self.local_rank] / self.local_world_size).to(
                self.optimizer_dtype)

    @torch.no_grad()
    def _calc_grad_norm(self) -> torch.Tensor:
        total = torch.zeros([], dtype=self.optimizer_dtype)
        for group in self.base_optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    total += (p.grad * p.grad).sum()
        dist.all_reduce(total, group=_group(self._sharding_groups, self.global_rank))
        if self._grad_norm_groups is not None:
            dist.all_reduce(total, group=_group(self._grad_norm_groups, self.global_rank))
        return total.sqrt()

    @torch.no_grad()
    def _clip_grad_norm(self, max_norm, norm_type=2.0) -> None:
        self._grad_norm = self._calc_grad_norm()
        coeff = torch.tensor(float(max_norm), dtype=self.optimizer_dtype) / (self._grad_norm + 1e-6)
        coeff = torch.where(coeff < 1, coeff, torch.ones_like(coeff))
        for group in self.base_optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.detach().mul_(coeff)

    @torch.no_grad()
    def step(self, closure=None, **kwargs):
        assert self.inited, "must call init_zero() first"
        self._reduce_gradients()
        if self.grad_clipping:
            self._clip_grad_norm(max_norm=self.max_norm)
        self.base_optimizer.step()
        self.base_optimizer.zero_grad(set_to_none=True)
        self.allgather_weights_and_update_full_parameter()
        self._sync_param_groups(self.base_optimizer.param_groups, self.param_groups)

    def allgather_weights_and_update_full_parameter(self):
        group = _group(self._sharding_groups, self.global_rank)
        for param, shard in self._pairs():
            if not self._has_grad(param, shard):
                continue
            parts = [torch.empty_like(shard.data) for _ in range(self.local_world_size)]
            dist.all_gather(parts, shard.data.contiguous(), group=group)
            param.data.copy_(torch.cat(parts)[:param.size(0)].to(param.dtype))

    def zero_grad(self, set_to_none: bool = False):
        super().zero_grad(set_to_none=set_to_none)
        if self.use_grad_acc_hook:
            for group in self.base_optimizer.param_groups:
                for shard in group["params"]:
                    if hasattr(shard, "main_grad"):
                        shard.main_grad.zero_()

    def state_dict(self):
        state_dict = super().state_dict()
        state_dict["base_state"] = self.base_optimizer.state_dict()["state"]
        state_dict["shape_info"] = self.get_shape_info()
        if self.save_master_weights:
            shards = [s for g in self.base_optimizer.param_groups for s in g["params"]]
            state_dict["sharded_master_weights"] = {i: s.data for i, s in enumerate(shards)}
        return state_dict

    def load_state_dict(self, state_dict):
        state_dict = copy.deepcopy(state_dict)
        base_state = state_dict.pop("base_state")    # a plain torch optimizer dict fails here, as in torch-xla
        super().load_state_dict(state_dict)
        self.init_zero()
        tmp = self.base_optimizer.state_dict()
        tmp["state"] = base_state
        tmp["param_groups"] = state_dict["param_groups"]
        self.base_optimizer.load_state_dict(tmp)
        if "sharded_master_weights" in state_dict:
            raise NotImplementedError("the double does not load sharded_master_weights (ScaleDown never saves them)")

    def get_shape_info(self):
        params = [p for g in self.param_groups for p in g["params"]]
        return {i: p.shape for i, p in enumerate(params)}
