# ZeRO-3 helpers: gather weights module by module, report how parameters are partitioned across ranks.
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn


def is_partitioned(param: torch.Tensor) -> bool:
    return hasattr(param, "ds_id")


def gathered(params: list[nn.Parameter], modify: bool):
    """Whole values of ZeRO-3 parameters on every rank; modify=True keeps rank 0's edits (all ranks agree)."""
    import deepspeed
    return deepspeed.zero.GatheredParameters(params, modifier_rank=0 if modify else None)


@torch.no_grad()
def gathered_state_dict(model: nn.Module, keep: bool) -> Optional[dict[str, torch.Tensor]]:
    """`model.state_dict()` with whole tensors, on CPU where `keep` (the writing rank), None elsewhere.

    Every rank takes part in each gather, one module's own parameters at a time, so no rank ever holds
    more than one module's full weights on its device; only the writing rank keeps CPU copies.
    """
    whole: dict[int, torch.Tensor] = {}
    done: set[int] = set()
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if is_partitioned(p) and id(p) not in done]
        if not own:
            continue
        with gathered(own, modify=False):
            for p in own:
                done.add(id(p))
                if keep:
                    whole[id(p)] = p.detach().to("cpu", copy=True)
    if not keep:
        return None
    state = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        state[name] = whole[id(tensor)] if id(tensor) in whole else tensor.detach().cpu()
    return state


def partition_report(model: nn.Module) -> dict[str, Any]:
    """This rank's share of every parameter: elements held in its partition, and whether the whole is resident."""
    params = {}
    for name, p in model.named_parameters():
        if is_partitioned(p):
            params[name] = {"numel": int(p.ds_numel), "partition": int(p.ds_tensor.numel()),
                            "resident": int(p.data.numel()), "trainable": bool(p.requires_grad)}
        else:
            params[name] = {"numel": int(p.numel()), "partition": int(p.numel()), "resident": int(p.numel()),
                            "trainable": bool(p.requires_grad)}
    return params
