# How one tensor is split over tensor-parallel ranks, and the exact shard / unshard arithmetic (NxD's rules).
"""A `Layout` says which slice of a full tensor each TP rank holds, the way NxD's parallel layers do:

- replicated   every rank holds the whole tensor (norms, LoRA A of column layers, small heads)
- column       ColumnParallelLinear: weight rows (out features) split, partition_dim 0
- row          RowParallelLinear: weight columns (in features) split, partition_dim 1
- vocab        ParallelEmbedding / vocab-parallel lm_head: rows of the vocabulary split, partition_dim 0

`stride` is NxD's partition_stride: the full tensor is cut along partition_dim into tp*stride equal chunks
and rank r takes chunks r, r+tp, ..; a fused [gate; up] with stride 2 gives rank r [gate_r; up_r], a fused
MHA [q; k; v] with stride 3 gives [q_r; k_r; v_r] (layers.py::create_local_weight).
`heads` ("q" or "kv") applies GQA's head arithmetic along partition_dim (see heads.py); a "kv" tensor is
stored replicated `kv_replication` times across ranks, and unsharding keeps the first copy (NxD does too).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from scaledown.errors import CheckpointError
from scaledown.parallel.heads import AttentionGeometry, kv_heads_of_rank, q_heads_of_rank

STYLES = ("replicated", "column", "row", "vocab")


@dataclass(frozen=True)
class Layout:
    style: str = "replicated"
    partition_dim: int = -1
    stride: int = 1
    heads: Optional[str] = None                       # None | "q" | "kv"
    geometry: Optional[AttentionGeometry] = None      # the attention stack when `heads` is set

    @property
    def is_sharded(self) -> bool:
        return self.partition_dim >= 0

    def describe(self) -> str:
        if not self.is_sharded:
            return "replicated"
        text = f"{self.style} (partition_dim {self.partition_dim}"
        if self.stride > 1:
            text += f", stride {self.stride}"
        if self.heads == "q":
            text += ", Q heads permuted to their KV replica"
        if self.heads == "kv" and self.geometry.kv_replication > 1:
            text += f", KV heads tiled x{self.geometry.kv_replication}"
        return text + ")"


REPLICATED = Layout()


def column(stride: int = 1, heads: Optional[str] = None, geometry: Optional[AttentionGeometry] = None) -> Layout:
    return Layout("column", 0, stride, heads, geometry)


def row(heads: Optional[str] = None, geometry: Optional[AttentionGeometry] = None) -> Layout:
    return Layout("row", 1, 1, heads, geometry)


def vocab() -> Layout:
    return Layout("vocab", 0)


def local_size(layout: Layout, full: int, tp: int) -> int:
    """Size along partition_dim on one rank."""
    if layout.heads == "kv":
        g = layout.geometry
        return full * g.kv_replication // tp
    return full // tp


def _head_index(layout: Layout, tp: int, rank: int) -> list[int]:
    g = layout.geometry
    return q_heads_of_rank(g, tp, rank) if layout.heads == "q" else kv_heads_of_rank(g, tp, rank)


def _by_heads(tensor: torch.Tensor, dim: int, head_dim: int) -> torch.Tensor:
    return tensor.unflatten(dim, (tensor.shape[dim] // head_dim, head_dim))


def shard(full: torch.Tensor, layout: Layout, tp: int, rank: int) -> torch.Tensor:
    """The slice of `full` that TP rank `rank` of `tp` holds (a new contiguous tensor)."""
    if not layout.is_sharded or tp == 1:
        return full.detach().clone().contiguous()
    dim = layout.partition_dim
    if layout.heads:
        index = torch.tensor(_head_index(layout, tp, rank))
        heads = _by_heads(full, dim, layout.geometry.head_dim).index_select(dim, index)
        return heads.flatten(dim, dim + 1).contiguous()
    chunk = full.shape[dim] // (tp * layout.stride)
    pieces = full.split(chunk, dim=dim)[rank::tp]
    return torch.cat(pieces, dim=dim).contiguous()


def unshard(shards: Sequence[torch.Tensor], layout: Layout, name: str = "tensor") -> tuple[torch.Tensor, list[str]]:
    """Rebuild the full tensor from every rank's shard (rank order). Returns (full, notes).

    Notes list copies that should be identical but are not (replicated tensors, KV replicas); the
    first copy wins, as in NxD's own converter.
    """
    tp = len(shards)
    notes: list[str] = []
    if not layout.is_sharded or tp == 1:
        for r in range(1, tp):
            if not torch.equal(shards[r], shards[0]):
                notes.append(f"{name}: replicated copy on tp rank {r} differs from rank 0")
        return shards[0].detach().clone(), notes
    dim = layout.partition_dim
    if layout.heads:
        g = layout.geometry
        count = g.num_heads if layout.heads == "q" else g.num_kv_heads
        first = _by_heads(shards[0], dim, g.head_dim)
        shape = list(first.shape)
        shape[dim] = count
        out = first.new_empty(shape)
        filled = [False] * count
        for r, piece in enumerate(shards):
            heads = _by_heads(piece, dim, g.head_dim)
            for local, head in enumerate(_head_index(layout, tp, r)):
                value = heads.select(dim, local)
                if filled[head]:
                    if not torch.equal(out.select(dim, head), value):
                        notes.append(f"{name}: KV head {head} on tp rank {r} differs from its first copy")
                    continue
                out.select(dim, head).copy_(value)
                filled[head] = True
        return out.flatten(dim, dim + 1), notes
    per_stride = [piece.chunk(layout.stride, dim=dim) for piece in shards]
    ordered = [per_stride[r][s] for s in range(layout.stride) for r in range(tp)]
    return torch.cat(ordered, dim=dim), notes


def check_shard_shape(name: str, tensor: torch.Tensor, expected: tuple[int, ...], where: str) -> None:
    if tuple(tensor.shape) != tuple(expected):
        raise CheckpointError(f"{where}: {name} has shape {tuple(tensor.shape)} but this model's plan expects "
                              f"{tuple(expected)}. The shard belongs to another model or another --tp/--kv_replication; "
                              f"pass the settings it was written with.")
