# TEST DOUBLE of neuronx_distributed.parallel_layers.parallel_state: NxD's [PP, DP, CP, TP] rank grid over gloo groups.
from __future__ import annotations

import os
from typing import Optional

import torch
import torch.distributed as dist

_STATE: dict = {}


def _grid(world: int, tp: int, pp: int, cp: int) -> torch.Tensor:
    dp = world // (tp * pp * cp)
    ranks = torch.arange(world)
    target = os.environ.get("NEURON_PLATFORM_TARGET_OVERRIDE", "trn1")
    if tp == 4 and target in ("trn1", "trn1n", "inf2"):   # Trn1: strided, locally connected TP groups
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world)) // tp
        return ranks.reshape(pp, dp // local, cp, tp, local).transpose(-1, -2).reshape(pp, dp, cp, tp)
    return ranks.reshape(pp, dp, cp, tp)


def _new_groups(lists: list[list[int]]):
    mine = None
    for ranks in lists:
        group = dist.new_group(ranks, backend="gloo")   # every rank creates every group, in the same order
        _STATE.setdefault("by_ranks", {})[tuple(ranks)] = group
        if dist.get_rank() in ranks:
            mine = (group, ranks)
    return mine


def group_for_ranks(ranks) -> Optional[dist.ProcessGroup]:
    return _STATE["by_ranks"][tuple(ranks)]


def initialize_model_parallel(tensor_model_parallel_size=1, pipeline_model_parallel_size=1, context_parallel_size=1,
                              expert_model_parallel_size=1, skip_collective_init=False, lnc_size=1, mesh_only=False):
    world = dist.get_world_size()
    tp, pp, cp = tensor_model_parallel_size, pipeline_model_parallel_size, context_parallel_size
    if world % (tp * pp * cp):
        raise RuntimeError(f"world_size ({world}) is not divisible by tensor_model_parallel_size ({tp}) x "
                           f"pipeline_model_parallel_size ({pp}) x context_parallel_size ({cp})")
    grid = _grid(world, tp, pp, cp)
    tp_groups = grid.reshape(-1, tp).tolist()
    dp_groups = grid.permute(0, 2, 3, 1).reshape(-1, grid.shape[1]).tolist()
    pp_groups = grid.permute(1, 2, 3, 0).reshape(-1, pp).tolist()
    _STATE.clear()
    _STATE.update(tp=_new_groups(tp_groups), dp=_new_groups(dp_groups), pp=_new_groups(pp_groups),
                  sizes=(tp, grid.shape[1], pp), lists=(tp_groups, dp_groups, pp_groups))


def model_parallel_is_initialized() -> bool:
    return "tp" in _STATE


def destroy_model_parallel() -> None:
    _STATE.clear()


def _rank_in(kind: str) -> int:
    return _STATE[kind][1].index(dist.get_rank())


def get_tensor_model_parallel_size() -> int:
    return _STATE["sizes"][0] if _STATE else 1


def get_tensor_model_parallel_rank() -> int:
    return _rank_in("tp") if _STATE else 0


def get_tensor_model_parallel_group(as_list: bool = False):
    return _STATE["lists"][0] if as_list else _STATE["tp"][0]


def get_tensor_model_parallel_replica_groups():
    return _STATE["lists"][0]


def get_data_parallel_size() -> int:
    return _STATE["sizes"][1] if _STATE else 1


def get_data_parallel_rank() -> int:
    return _rank_in("dp") if _STATE else 0


def get_data_parallel_group(as_list: bool = False):
    return _STATE["lists"][1] if as_list else _STATE["dp"][0]


def get_data_parallel_replica_groups():
    return _STATE["lists"][1]


def get_pipeline_model_parallel_size() -> int:
    return _STATE["sizes"][2] if _STATE else 1


def get_pipeline_model_parallel_rank() -> int:
    return _rank_in("pp") if _STATE else 0


def get_pipeline_model_parallel_group(as_list: bool = False):
    return _STATE["lists"][2] if as_list else _STATE["pp"][0]


def get_context_model_parallel_size() -> int:
    return 1


def get_expert_model_parallel_size() -> int:
    return 1


def is_global_rank_zero() -> bool:
    return dist.get_rank() == 0


def initialize_kv_group(kv_shared_group_size: int = 1, sequential_ranks_in_group: bool = False):
    """Ranks of a TP group holding the same KV heads (Trn1 tiling): tp ranks r, r + tp/m, r + 2 tp/m, ..."""
    if "kv" in _STATE:
        return
    stride = get_tensor_model_parallel_size() // kv_shared_group_size
    lists = [[group[i + j * stride] for j in range(kv_shared_group_size)]
             for group in _STATE["lists"][0] for i in range(stride)]
    _STATE["kv"] = _new_groups(lists)
    _STATE["kv_lists"] = lists


def get_kv_shared_group(as_list: bool = False):
    return _STATE["kv_lists"] if as_list else _STATE["kv"][0]
