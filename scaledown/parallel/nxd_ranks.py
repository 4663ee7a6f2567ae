# NxD rank layout arithmetic: which tensor/data/pipeline group each global rank is in (no NxD needed).
"""NxD 0.17 (parallel_layers/parallel_state.py::initialize_model_parallel) reshapes the global ranks
row-major into [PP, DP, CP, TP]: TP is contiguous (intra-node), so tp = r % TP, dp = (r // (TP*CP)) % DP,
pp = r // (DP*CP*TP). One exception on Trn1: TP=4 takes strided, locally connected ranks: the node's ranks
are reshaped [..., TP, LOCAL_WORLD_SIZE/TP] and transposed, giving TP groups [0, 8, 16, 24], [1, 9, ..] on a
32-core node. The backend uses this to find the rank that owns the loss (logs TensorBoard); the dry run
prints it; a test checks it against NxD's formula.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from scaledown.errors import ConfigError


@dataclass(frozen=True)
class RankGrid:
    world_size: int
    tp: int
    pp: int
    local_world_size: int
    cp: int = 1
    trn1: bool = True

    def __post_init__(self) -> None:
        model = self.tp * self.pp * self.cp
        if self.world_size % model:
            raise ConfigError(
                f"{self.world_size} ranks cannot be split into tensor_parallel_size {self.tp} x pipeline_parallel_size "
                f"{self.pp}" + (f" x context {self.cp}" if self.cp > 1 else "") + f" = {model}: the world size must be "
                f"a multiple of {model}. Use nodes x processes_per_node = k x {model}, or other degrees.")
        if self.local_world_size % self.tp and self.world_size > self.local_world_size:
            raise ConfigError(f"tensor_parallel_size {self.tp} does not divide the {self.local_world_size} processes per "
                              f"node: a tensor-parallel group must stay inside one node. Use a tp dividing "
                              f"{self.local_world_size}.")

    @classmethod
    def for_config(cls, config, world_size: int, processes_per_node: int) -> "RankGrid":
        """The grid of a run: its config's tensor / pipeline degrees over `world_size` ranks (ConfigError if they do
        not fit). The one place a Neuron run's degrees meet the world size."""
        return cls(world_size, config.tensor_parallel_size, config.pipeline_parallel_size, processes_per_node)

    @property
    def dp(self) -> int:
        return self.world_size // (self.tp * self.pp * self.cp)

    @property
    def strided_tp(self) -> bool:
        """Trn1 TP=4: locally connected, strided groups."""
        return self.trn1 and self.tp == 4 and self.local_world_size % 4 == 0 and self.local_world_size > 4

    @cached_property
    def grid(self) -> torch.Tensor:
        """[PP, DP, CP, TP] tensor of global ranks, as NxD builds it."""
        ranks = torch.arange(self.world_size)
        if self.strided_tp:
            local = self.local_world_size // self.tp
            ranks = ranks.reshape(self.pp, self.dp // local, self.cp, self.tp, local).transpose(-1, -2)
        return ranks.reshape(self.pp, self.dp, self.cp, self.tp)

    def coords(self, rank: int) -> dict[str, int]:
        where = (self.grid == rank).nonzero()[0].tolist()
        return {"pp": where[0], "dp": where[1], "cp": where[2], "tp": where[3]}

    def tp_groups(self) -> list[list[int]]:
        return self.grid.reshape(-1, self.tp).tolist()

    def dp_groups(self) -> list[list[int]]:
        return self.grid.permute(0, 2, 3, 1).reshape(-1, self.dp).tolist()

    def pp_groups(self) -> list[list[int]]:
        return self.grid.permute(1, 2, 3, 0).reshape(-1, self.pp).tolist()

    def loss_rank(self) -> int:
        """First rank of the last pipeline stage with dp = cp = tp = 0: the one holding the loss, which logs."""
        return int(self.grid[self.pp - 1, 0, 0, 0])

    def describe(self) -> str:
        def show(groups: list[list[int]]) -> str:
            text = ", ".join(str(g) for g in groups[:4])
            return text + (f", ... ({len(groups)} groups)" if len(groups) > 4 else "")
        return (f"world {self.world_size} = pp {self.pp} x dp {self.dp} x tp {self.tp}"
                + (" (Trn1 TP=4: strided intra-node groups)" if self.strided_tp else "") + "\n"
                f"  tp groups: {show(self.tp_groups())}\n  dp groups: {show(self.dp_groups())}\n"
                f"  pp groups: {show(self.pp_groups())}\n  loss / logging rank: {self.loss_rank()}")
