# Deterministic, resumable data order: a seeded permutation per epoch, cut into global batches.
from __future__ import annotations

import random

from scaledown.errors import ConfigError
from scaledown.training.batching import BatchPlan


class GlobalBatchOrder:
    """Which examples each rank's micro-batches hold at every optimizer step.

    The order depends only on (dataset size, seed, global batch, shuffle), so a resumed run at step s, on any
    backend or number of ranks, sees exactly the examples an uninterrupted run would. Each epoch is a
    fresh permutation; a final partial batch is dropped so every step has the full global batch.
    """

    def __init__(self, num_examples: int, plan: BatchPlan, seed: int, shuffle: bool = True):
        if num_examples < plan.global_batch:
            raise ConfigError(f"the training data has {num_examples} rows, fewer than one global batch "
                              f"(batch_size={plan.global_batch}). Add rows or lower --batch_size.")
        self.num_examples = num_examples
        self.plan = plan
        self.seed = seed
        self.shuffle = shuffle
        self.steps_per_epoch = num_examples // plan.global_batch
        self._epoch, self._perm = -1, []

    def _permutation(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            perm = list(range(self.num_examples))
            if self.shuffle:
                random.Random(self.seed * 1_000_003 + epoch).shuffle(perm)
            self._epoch, self._perm = epoch, perm
        return self._perm

    def global_batch(self, step: int) -> list[int]:
        """Indices of the global batch used at optimizer step `step` (0-based)."""
        epoch, within = divmod(step, self.steps_per_epoch)
        start = within * self.plan.global_batch
        return self._permutation(epoch)[start:start + self.plan.global_batch]

    def micro_batches(self, step: int, dp_rank: int) -> list[list[int]]:
        """This rank's share of step `step`, as `accumulation` micro-batches."""
        indices = self.global_batch(step)
        per_rank = self.plan.global_batch // self.plan.dp_size
        mine = indices[dp_rank * per_rank:(dp_rank + 1) * per_rank]
        m = self.plan.micro_batch
        return [mine[i:i + m] for i in range(0, per_rank, m)]
