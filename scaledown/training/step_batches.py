# Training batches prepared ahead of the step: one DataLoader item per optimizer step, collated in worker processes.
from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch.utils.data import DataLoader, Dataset

from scaledown.data.collator import count_tokens
from scaledown.errors import ScaleDownError
from scaledown.models.scaledown_model import add_gather_indices, loss_counts
from scaledown.training.sampler import GlobalBatchOrder

# workers per process when dataloader_num_workers is -1 (auto) and the step runs on an accelerator: tokenising
# and padding a step's rows takes milliseconds per micro-batch, which two processes hide behind the device's step
AUTO_WORKERS_ACCELERATOR = 2
PREFETCH_STEPS = 2   # steps each worker prepares ahead (DataLoader prefetch_factor)


@dataclass
class StepBatches:
    """One rank's micro-batches of one optimizer step, collated on the host.

    batches: the collated micro-batches (CPU tensors; pinned when the loader pins); counts: (2,) float64 answer
    tokens and scored documents over them (scaledown_model.loss_counts, the StepNorm denominators before the
    all-reduce); fed_tokens: real compressor + generator tokens (collator.count_tokens); examples: rows.
    """
    step: int
    batches: list[dict[str, torch.Tensor]]
    counts: torch.Tensor
    fed_tokens: int
    examples: int

    def pin_memory(self) -> "StepBatches":
        """DataLoader(pin_memory=True) calls this: page-locked batches copy to the GPU without blocking the host."""
        self.batches = [{k: v.pin_memory() for k, v in b.items()} for b in self.batches]
        return self


class StepDataset(Dataset):
    """Item `step` = this data-parallel rank's micro-batches of optimizer step `step` (GlobalBatchOrder's split).

    collate(rows) -> batch is the phase's collate with its options bound; it runs in the loader's worker processes,
    so it must not touch the model's weights (InputBuilder only tokenises and pads).
    """

    def __init__(self, rows, order: GlobalBatchOrder, dp_rank: int, collate: Callable[[list], dict],
                 gather_indices: bool):
        self.rows, self.order, self.dp_rank = rows, order, dp_rank
        self.collate, self.gather_indices = collate, gather_indices

    def __len__(self) -> int:   # steps are indexed globally; the sampler picks the phase's range
        return 1 << 62

    def __getitem__(self, step: int):
        try:
            batches, counts, fed, examples = [], torch.zeros(2, dtype=torch.float64), 0, 0
            for indices in self.order.micro_batches(step, self.dp_rank):
                rows = [self.rows[i] for i in indices]
                batch = self.collate(rows)
                counts += torch.tensor(loss_counts(batch), dtype=torch.float64)
                fed += count_tokens(batch)
                examples += len(rows)
                batches.append(add_gather_indices(batch) if self.gather_indices else batch)
            return StepBatches(step, batches, counts, fed, examples)
        except ScaleDownError as exc:   # a user's data problem: hand it to the training process whole
            return _Failure(exc)


@dataclass
class _Failure:
    """A data error raised in a worker, carried back as a value so the training process raises it unchanged
    (DataLoader would re-raise it with the worker's traceback pasted into the message)."""
    error: ScaleDownError

    def pin_memory(self) -> "_Failure":
        return self


def resolve_workers(requested: int, device_type: str) -> int:
    """dataloader_num_workers: -1 (auto) -> AUTO_WORKERS_ACCELERATOR on an accelerator, 0 on CPU (workers would take
    cores from the step itself); otherwise as asked."""
    if requested >= 0:
        return requested
    if device_type == "cpu":
        return 0
    return max(0, min(AUTO_WORKERS_ACCELERATOR, (os.cpu_count() or 1) - 1))


def step_loader(dataset: StepDataset, first: int, end: int, workers: int, pin: bool):
    """Yields StepBatches for steps first..end-1 in order; raises a worker's data error in this process."""
    options: dict[str, Any] = {}
    if workers > 0:
        # forked workers inherit a tokenizer that may have used its thread pool: keep them single-threaded quietly
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        options = dict(num_workers=workers, prefetch_factor=PREFETCH_STEPS, worker_init_fn=_quiet_worker)
    # its own generator: a DataLoader iterator otherwise draws its worker seed from the global RNG, which would
    # shift dropout masks between a resumed run and the run it continues
    seeds = torch.Generator().manual_seed(first)
    loader = DataLoader(dataset, batch_size=None, sampler=range(first, end), pin_memory=pin, generator=seeds,
                        **options)
    for item in loader:
        if isinstance(item, _Failure):
            raise item.error
        yield item


def _quiet_worker(worker_id: int) -> None:
    """Workers leave SIGINT / SIGTERM to the training process: it finishes the step, saves and then stops them.
    A worker killed by Ctrl-C or scancel's SIGTERM would otherwise end the run before its checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def worker_count_note(workers: int, requested: int, device_type: str) -> Optional[str]:
    """One line for the run log saying how batches are prepared (and why, when auto chose)."""
    how = f"{workers} loader worker{'s' if workers != 1 else ''}" if workers else "in the training process"
    why = f" (auto on {device_type})" if requested < 0 else ""
    return f"batches prepared {how}{why}"
