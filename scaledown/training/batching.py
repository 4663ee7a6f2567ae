# Batch arithmetic, done once: global batch = micro batch x accumulation x data-parallel ranks.
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from scaledown.errors import ConfigError


@dataclass(frozen=True)
class BatchPlan:
    global_batch: int      # examples per optimizer step, all ranks together (--batch_size)
    micro_batch: int       # examples per rank per forward/backward (--micro_batch_size)
    accumulation: int      # forward/backward passes per optimizer step on each rank
    dp_size: int           # data-parallel ranks

    def describe(self) -> str:
        return (f"global batch {self.global_batch} = micro batch {self.micro_batch} x accumulation "
                f"{self.accumulation} x data-parallel ranks {self.dp_size}")


def plan_batches(global_batch: int, micro_batch: Optional[int], dp_size: int,
                 default_micro: int = 8) -> BatchPlan:
    """Derive accumulation from --batch_size, --micro_batch_size and the data-parallel size.

    micro_batch None picks the largest micro batch <= default_micro that divides the per-rank share.
    Any conflict raises a ConfigError that prints every factor.
    """
    if dp_size < 1:
        raise ConfigError(f"data-parallel size must be >= 1, got {dp_size}")
    if global_batch % dp_size:
        raise ConfigError(f"batch_size={global_batch} is not divisible by the {dp_size} data-parallel ranks. "
                          f"Use a batch_size that is a multiple of {dp_size} (e.g. {dp_size * max(1, global_batch // dp_size)}).")
    per_rank = global_batch // dp_size
    if micro_batch is None:
        micro_batch = max(m for m in range(1, min(default_micro, per_rank) + 1) if per_rank % m == 0)
    if micro_batch < 1 or per_rank % micro_batch:
        raise ConfigError(
            f"batch_size={global_batch} cannot be split as micro_batch_size={micro_batch} x accumulation x "
            f"{dp_size} data-parallel ranks: {global_batch} / {dp_size} ranks = {per_rank} examples per rank, "
            f"which is not a multiple of {micro_batch}. Choose micro_batch_size dividing {per_rank}, or batch_size = "
            f"{micro_batch} x accumulation x {dp_size}.")
    return BatchPlan(global_batch, micro_batch, per_rank // micro_batch, dp_size)
