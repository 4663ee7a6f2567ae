# Attention heads under tensor parallelism as NxD lays them out on Trn1: KV replication and the Q head order.
"""GQA with fewer key/value heads than tensor-parallel ranks (NxD `GQAQKVColumnParallelLinear`, Trn1).

The KV heads are replicated `m = kv_replication` times by *tiling* (Trn1: K0 K1 .. K(kv-1), K0 K1 .., m
times; Trn2 would repeat_interleave instead) and the tiled list is cut into `tp` contiguous pieces:
rank r holds tiled positions [r*c, (r+1)*c) with c = kv*m/tp, i.e. KV heads (r*c + j) % kv.

Each rank must hold the query heads that attend to *its* KV heads, in the order its local repeat_kv
expects (local Q head i uses local KV slot i // g). Position p of the tiled list (KV head p % kv, copy
p // kv) owns the copy-th block of g = heads / (kv*m) query heads of that KV group. With c = 1 this is
NxD's checkpoint converter order (Q0,Q4,Q1,Q5,.. for 8 heads, 2 KV heads, tp 8); with m = 1 it is the
plain contiguous split. o_proj's input columns follow the same Q order.
"""
from __future__ import annotations

from dataclasses import dataclass

from scaledown.errors import ConfigError


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


def valid_kv_replications(num_heads: int, num_kv_heads: int, tp: int) -> list[int]:
    """Replication factors m NxD accepts: m divides tp, kv*m divides by tp, each rank keeps whole GQA groups."""
    return [m for m in range(1, tp + 1)
            if tp % m == 0 and (num_kv_heads * m) % tp == 0 and num_heads % (num_kv_heads * m) == 0]


def default_kv_replication(num_heads: int, num_kv_heads: int, tp: int) -> int:
    """The smallest valid factor (1 when the KV heads already divide tp); 0 when none exists."""
    found = valid_kv_replications(num_heads, num_kv_heads, tp)
    return found[0] if found else 0


def resolve_geometry(stack: str, num_heads: int, num_kv_heads: int, head_dim: int, tp: int,
                     kv_replication: int | None = None) -> AttentionGeometry:
    """Check that `tp` can shard these heads and pick the KV replication (explicit or the default)."""
    if num_heads % tp:
        divisors = [d for d in range(1, num_heads + 1) if num_heads % d == 0]
        raise ConfigError(f"--tp {tp} does not divide the {stack}'s {num_heads} attention heads. Use a tensor-parallel "
                          f"degree that divides them: {', '.join(map(str, divisors))}.")
    valid = valid_kv_replications(num_heads, num_kv_heads, tp)
    if kv_replication is None:
        if not valid:
            raise ConfigError(f"the {stack}'s {num_kv_heads} key/value heads cannot be replicated to fit --tp {tp} "
                              f"with {num_heads} query heads. Use a --tp that divides {num_heads} and is a multiple "
                              f"or divisor of {num_kv_heads}.")
        kv_replication = valid[0]
    elif kv_replication not in valid:
        hint = f"valid values for --tp {tp}: {', '.join(map(str, valid))}" if valid else "no value works for this --tp"
        raise ConfigError(f"--kv_replication {kv_replication} does not fit the {stack} ({num_heads} heads, "
                          f"{num_kv_heads} key/value heads) at --tp {tp}: it must divide tp, make heads x kv_replication "
                          f"a multiple of tp and keep whole query groups per rank; {hint}.")
    return AttentionGeometry(stack, num_heads, num_kv_heads, head_dim, kv_replication)


def kv_slots(geom: AttentionGeometry, tp: int, rank: int) -> list[tuple[int, int]]:
    """(kv head, copy) held by `rank`, in local order."""
    per_rank = geom.num_kv_heads * geom.kv_replication // tp
    positions = range(rank * per_rank, (rank + 1) * per_rank)
    return [(p % geom.num_kv_heads, p // geom.num_kv_heads) for p in positions]


def kv_heads_of_rank(geom: AttentionGeometry, tp: int, rank: int) -> list[int]:
    """KV head indices (rows of k_proj / v_proj in head units) that `rank` holds."""
    return [head for head, _ in kv_slots(geom, tp, rank)]


def q_heads_of_rank(geom: AttentionGeometry, tp: int, rank: int) -> list[int]:
    """Query head indices `rank` holds, in the order its local GQA grouping needs."""
    g = geom.heads_per_kv_copy
    group = geom.num_heads // geom.num_kv_heads   # query heads per KV head
    heads: list[int] = []
    for kv_head, copy in kv_slots(geom, tp, rank):
        start = kv_head * group + copy * g
        heads.extend(range(start, start + g))
    return heads
