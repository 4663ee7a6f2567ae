# NxD's own slicing rules, transcribed from neuronx_distributed (scripts/checkpoint_converter.py, Trn1 path,
# and parallel_layers/layers.py::create_local_weight) as an independent oracle for the plan's shards.
import torch


def q_rows_trn1(full: torch.Tensor, q_heads: int, kv_heads: int, head_dim: int, kv_multiplier: int, tp: int,
                rank: int) -> torch.Tensor:
    """convert_full_state_to_tp for weight_q (and o_proj after a transpose); NxD assumes kv_heads * m == tp."""
    weights = full.reshape(q_heads, head_dim, -1)
    shape = weights.size()
    per_rank = q_heads // (kv_heads * kv_multiplier)
    weights = weights.reshape(-1, per_rank, head_dim, shape[-1])
    indices = torch.arange(0, kv_heads) * tp // kv_heads
    splits = [weights[indices + i] for i in range(tp // kv_heads)]
    return torch.cat(splits, dim=0)[rank].reshape(-1, shape[-1])


def o_columns_trn1(full: torch.Tensor, q_heads: int, kv_heads: int, head_dim: int, kv_multiplier: int, tp: int,
                   rank: int) -> torch.Tensor:
    return q_rows_trn1(full.t(), q_heads, kv_heads, head_dim, kv_multiplier, tp, rank).t()


def kv_rows_trn1(full: torch.Tensor, kv_multiplier: int, tp: int, rank: int) -> torch.Tensor:
    repeated = full.repeat(kv_multiplier, 1)
    size = repeated.size(0) // tp
    return repeated.narrow(0, rank * size, size)


def contiguous(full: torch.Tensor, dim: int, tp: int, rank: int) -> torch.Tensor:
    size = full.size(dim) // tp
    return full.narrow(dim, rank * size, size)


def fused(parts: list[torch.Tensor], tp: int, rank: int) -> torch.Tensor:
    """[a_r; b_r; ...]: the converter's gate_up_proj (stride 2) and coalesced MHA qkv (stride 3) rule."""
    return torch.cat([p.chunk(tp)[rank] for p in parts])
