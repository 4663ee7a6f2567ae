# How one tensor is split over tensor-parallel ranks (NxD's layouts), and the head counts of an attention stack.
"""A `Layout` says which slice of a full tensor each TP rank holds, the way NxD's parallel layers do:

- replicated   every rank holds the whole tensor (norms, LoRA A of column layers, small heads)
- column       ColumnParallelLinear: weight rows (out features) split, partition_dim 0
- row          RowParallelLinear: weight columns (in features) split, partition_dim 1
- vocab        ParallelEmbedding / vocab-parallel lm_head: rows of the vocabulary split, partition_dim 0

`stride` is NxD's partition_stride: the full tensor is cut along partition_dim into tp*stride equal chunks
and rank r takes chunks r, r+tp, ..; a fused [gate; up] with stride 2 gives rank r [gate_r; up_r], a fused
MHA [q; k; v] with stride 3 gives [q_r; k_r; v_r] (layers.py::create_local_weight).
`heads` ("q" or "kv") applies GQA's head arithmetic along partition_dim (plan.py: shard); a "kv" tensor is
stored replicated `kv_replication` times across ranks, and unsharding keeps the first copy (NxD does too).

This module only describes layouts; the arithmetic that needs the tensor-parallel degree (which rows a rank
holds, shard / unshard, GQA head order) is in plan.py, next to the plan that resolves the degree.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from scaledown.errors import CheckpointError


@dataclass(frozen=True)
class AttentionGeometry:
    """Head counts of one attention stack (the generator, or the compressor backbone)."""
    stack: str                # "generator" / "compressor": named in error messages
    num_heads: int
    num_kv_heads: int
    head_dim: int
    kv_replication: int = 1   # NxD kv_size_multiplier

    @property
    def heads_per_kv_copy(self) -> int:
        """g: query heads served by one copy of one KV head."""
        return self.num_heads // (self.num_kv_heads * self.kv_replication)



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


def check_shard_shape(name: str, tensor: torch.Tensor, expected: tuple[int, ...], where: str) -> None:
    if tuple(tensor.shape) != tuple(expected):
        raise CheckpointError(f"{where}: {name} has shape {tuple(tensor.shape)} but this model's plan expects "
                              f"{tuple(expected)}. The shard belongs to another model or another --tp/--kv_replication; "
                              f"pass the settings it was written with.")
