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


def groups_for_replica_groups(lists: list[list[int]]) -> None:
    """The gloo group of this rank's replica group (torch-xla style: `lists` partitions the ranks), for
    xm.all_reduce(groups=...) in the double. Made by its members only (use_local_synchronization), so ranks of
    different pipeline stages may reduce over different lists, as on XLA."""
    mine = next(g for g in lists if dist.get_rank() in g)
    known = _STATE.setdefault("by_ranks", {})
    if tuple(mine) not in known:
        known[tuple(mine)] = dist.new_group(mine, backend="gloo", use_local_synchronization=True)


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


def arrange_kv_groups(num_tensor_model_parallel_groups: int = 1, tensor_model_parallel_size: int = 1,
                      kv_shared_group_size: int = 1, sequential_ranks_in_group: bool = False,
                      hardware_type: str = "trn1") -> list[list[int]]:
    """NxD parallel_state.py::arrange_kv_groups, rank arithmetic as written there: on Trn1 the groups are
    *global* ranks i*tp + j, stepping tp / kv_shared_group_size: the contiguous rank grid, also where the TP
    groups themselves are strided (Trn1 TP=4), so there they pair ranks of different TP groups."""
    groups = []
    if hardware_type == "trn2":
        for i in range(num_tensor_model_parallel_groups):
            for k in range(tensor_model_parallel_size // kv_shared_group_size):
                groups.append([i * tensor_model_parallel_size + k * kv_shared_group_size + j
                               for j in range(kv_shared_group_size)])
    elif sequential_ranks_in_group:
        total = num_tensor_model_parallel_groups * tensor_model_parallel_size
        groups = [list(range(i, i + kv_shared_group_size)) for i in range(0, total, kv_shared_group_size)]
    else:
        step = tensor_model_parallel_size // kv_shared_group_size
        for i in range(num_tensor_model_parallel_groups):
            for j in range(step):
                groups.append(list(range(i * tensor_model_parallel_size + j, (i + 1) * tensor_model_parallel_size,
                                         step)))
    return groups


def initialize_kv_group(kv_shared_group_size: int = 1, sequential_ranks_in_group: bool = False):
    """NxD: one KV-shared group size per process ("Currently the library supports only single KV size for all
    layers"), groups from arrange_kv_groups."""
    if "kv" in _STATE:
        assert kv_shared_group_size == _STATE["kv_size"], "Currently the library supports only single KV size for all layers"
        return
    tp = get_tensor_model_parallel_size()
    assert tp % kv_shared_group_size == 0, (f"kv_shared_group_size: {kv_shared_group_size}, should divide tensor "
                                            f"model parallel group {tp} ")
    target = os.environ.get("NEURON_PLATFORM_TARGET_OVERRIDE", "trn1")
    lists = arrange_kv_groups(dist.get_world_size() // tp, tp, kv_shared_group_size, sequential_ranks_in_group,
                              "trn2" if target.startswith("trn2") else "trn1")
    _STATE["kv"] = _new_groups(lists)
    _STATE["kv_lists"] = lists
    _STATE["kv_size"] = kv_shared_group_size


def get_kv_shared_group(as_list: bool = False):
    return _STATE["kv_lists"] if as_list else _STATE["kv"][0]


def get_kv_shared_replica_groups():
    return _STATE["kv_lists"]
