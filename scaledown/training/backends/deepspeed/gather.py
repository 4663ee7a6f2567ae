# ZeRO-3 helpers: gather weights module by module, report how parameters are partitioned across ranks.
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Optional

import torch
from torch import nn


def is_partitioned(param: torch.Tensor) -> bool:
    return hasattr(param, "ds_id")


def gathered(params: list[nn.Parameter], modify: bool):
    """Whole values of ZeRO-3 parameters on every rank; modify=True keeps rank 0's edits (all ranks agree)."""
    import deepspeed
    return deepspeed.zero.GatheredParameters(params, modifier_rank=0 if modify else None)


_RESIDENT = -1   # a module id no module has: while it is in ds_active_sub_modules, ZeRO-3's hooks never release


@contextlib.contextmanager
def resident(params: list[nn.Parameter]) -> Iterator[None]:
    """ZeRO-3 parameters gathered once (one collective) and kept whole through any number of forwards.

    GatheredParameters alone does not survive a forward: each module's post-forward hook re-partitions its
    parameters, so greedy decoding would all-gather every layer again for every token. The coordinator releases
    a parameter only when no active submodule holds it; a sentinel entry holds them until the block ends.
    Every rank must enter together (it is a collective).
    """
    import deepspeed
    params = [p for p in params if is_partitioned(p)]
    with deepspeed.zero.GatheredParameters(params):
        for p in params:
            p.ds_active_sub_modules.add(_RESIDENT)
        try:
            yield
        finally:
            for p in params:
                p.ds_active_sub_modules.discard(_RESIDENT)


def full_bytes(params: list[nn.Parameter]) -> int:
    """Bytes of the whole (gathered) parameters."""
    return sum(int(getattr(p, "ds_numel", p.numel())) * p.element_size() for p in params)


def free_bytes(device: torch.device) -> int:
    """Memory free for new tensors on `device` (CUDA: the driver's count; CPU: the host's available memory)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except ImportError:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


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
