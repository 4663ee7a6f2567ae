# TEST DOUBLE of torch_xla.core.xla_model: device, step marking with step closures, rendezvous, all_reduce.
from __future__ import annotations

import torch
import torch.distributed as dist

REDUCE_SUM, REDUCE_MAX, REDUCE_MIN = "sum", "max", "min"
_closures: list = []
mark_step_count = 0            # read by tests: how many graph cuts the backend made


def xla_device(n=None, devkind=None) -> torch.device:
    return torch.device("cpu")


def add_step_closure(closure, args=(), run_async=False) -> None:
    """Queued; runs after the current step's graph executes (at mark_step), as in torch-xla."""
    _closures.append((closure, args))


def mark_step(wait=False, reset_scope=True) -> None:
    global mark_step_count
    mark_step_count += 1
    pending = list(_closures)
    _closures.clear()
    for closure, args in pending:
        closure(*args)


def _ordinal() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def get_ordinal(defval=0) -> int:
    return _ordinal()


def is_master_ordinal(local=True) -> bool:
    return _ordinal() == 0


def master_print(*args, **kwargs) -> None:
    if _ordinal() == 0:
        print(*args, **kwargs)


def rendezvous(tag, payload=b"", replicas=[]):
    if dist.is_initialized():
        dist.barrier()
    return [payload]


def _group_of(groups):
    if not groups:
        return None
    from neuronx_distributed.parallel_layers import parallel_state
    groups = [list(g) for g in groups]
    parallel_state.groups_for_replica_groups(groups)
    return parallel_state.group_for_ranks(next(g for g in groups if _ordinal() in g))


def all_reduce(reduce_type, inputs, scale=1.0, groups=None, pin_layout=True):
    op = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[reduce_type]
    tensors = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
    for tensor in tensors:
        dist.all_reduce(tensor, op=op, group=_group_of(groups))
        if scale != 1.0:
            tensor.mul_(scale)
    return inputs
