# Gradient norm and clipping over DTensor gradients that may live on different meshes (FSDP2, TP, pipeline stages).
from __future__ import annotations

from typing import Iterable, Optional

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor


def clip_grad_norm(params: Iterable[torch.nn.Parameter], max_norm: float, pipeline_group=None,
                   device: Optional[torch.device] = None) -> torch.Tensor:
    """Clip to `max_norm` (inf: only measure); returns the total L2 norm before clipping, a plain tensor.

    torch.nn.utils.clip_grad_norm_ fails on gradients mixing plain tensors and DTensors or DTensors of different
    meshes (pytorch#180346): group by mesh, take each group's norm as a full tensor, combine, then clip each group
    with the one total (torch.nn.utils.get_total_norm / clip_grads_with_norm_; torchtitan distributed/utils.py).
    `pipeline_group`: the stages hold different parameters, so the squared norms are summed over it too (every stage
    takes part, also one without gradients); `device`: where that sum runs.
    """
    groups: dict[object, list[torch.nn.Parameter]] = {}
    for p in params:
        if p.grad is not None:
            key = p.grad.device_mesh if isinstance(p.grad, DTensor) else None
            groups.setdefault(key, []).append(p)
    norms = []
    for group in groups.values():
        norm = torch.nn.utils.get_total_norm([p.grad for p in group], 2.0)
        norms.append(norm.full_tensor() if isinstance(norm, DTensor) else norm)
    device = norms[0].device if norms else (device or torch.device("cpu"))
    total = (torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]), 2.0) if norms
             else torch.zeros((), device=device))
    if pipeline_group is not None:
        squared = total.float().pow(2)
        dist.all_reduce(squared, group=pipeline_group)
        total = squared.sqrt()
    if max_norm != float("inf"):
        for group in groups.values():
            torch.nn.utils.clip_grads_with_norm_(group, max_norm, total)
    return total.detach()
