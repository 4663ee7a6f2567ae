# The backend contract: what the training loop asks of one-process, DeepSpeed and NeuronX Distributed runs.
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import Any, Callable, Optional

import torch

from scaledown.models.scaledown_model import ScaleDownModel, ScaleDownOutput


class Backend(ABC):
    """Owns placement, parallelism, optimizer, mixed precision and checkpoint files.

    The loop (training/trainer.py) owns everything else: data order, phases, schedules of
    logging/eval/saving, and the resumable client state. A backend never imports the loop.
    """

    name = "base"
    rank = 0            # global rank
    world_size = 1
    dp_rank = 0         # data-parallel rank: which share of each global batch this process reads
    dp_size = 1

    @property
    def is_main(self) -> bool:
        """The rank that logs, shows progress and writes shared files."""
        return self.rank == 0

    def build_model(self, build: Callable[[], ScaleDownModel]) -> ScaleDownModel:
        """Construct the model the way this backend needs it (ZeRO-3: partitioned while built; NxD: meta device)."""
        return build()

    @abstractmethod
    def setup(self, model: ScaleDownModel) -> None:
        """Place (and, for parallel backends, shard) the model. Called once before any phase."""

    @abstractmethod
    def prepare(self, param_groups: list[dict[str, Any]], lr_lambda, accumulation: int) -> None:
        """Build optimizer + scheduler for a phase; param_groups carry 'name' and 'lr'."""

    @abstractmethod
    def forward_backward(self, batch: dict[str, torch.Tensor], documents_as: str, loss_scale: float
                         ) -> ScaleDownOutput:
        """Forward one micro-batch and accumulate gradients of loss * loss_scale; returns detached parts."""

    @abstractmethod
    def optimizer_step(self) -> Optional[float]:
        """Clip, step, advance the schedule, zero grads; returns the pre-clip gradient norm."""

    @abstractmethod
    def learning_rates(self) -> dict[str, float]:
        """Current learning rate of each named parameter group."""

    @abstractmethod
    def save_checkpoint(self, root: str, tag: str, client_state: dict[str, Any]) -> str:
        """Write root/tag on every rank; return its path once all ranks are done (trainer_state.json comes after)."""

    @abstractmethod
    def load_checkpoint(self, path: str) -> dict[str, Any]:
        """Restore model, optimizer and schedule from a checkpoint folder; return the client state."""

    @abstractmethod
    def export_pretrained(self, directory: str) -> None:
        """Write the Hugging Face folder (ScaleDownModel.save_pretrained layout)."""

    @property
    @abstractmethod
    def model(self) -> ScaleDownModel:
        """The (unwrapped) model, for evaluation and generation."""

    # ---- helpers with single-process defaults --------------------------------------------------
    def to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return batch

    def autocast(self):
        return contextlib.nullcontext()

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        return values

    def barrier(self) -> None:
        pass

    def generation_kwargs(self) -> dict[str, Any]:
        """Extra generate() arguments (ZeRO-3 needs synced_gpus=True)."""
        return {}

    def memory_gb(self) -> Optional[float]:
        return None

    def peak_flops(self) -> Optional[float]:
        """Peak dense FLOP/s of this rank's device when known (for MFU)."""
        return None

    def close(self) -> None:
        pass
