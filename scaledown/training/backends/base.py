# The backend contract: what the training loop asks of one-process, DeepSpeed and NeuronX Distributed runs.
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist

from scaledown.models.scaledown_model import ScaleDownModel, ScaleDownOutput


@dataclass(frozen=True)
class StepNorm:
    """The denominators of one optimizer step's objective, counted over the WHOLE global batch.

    tokens: answer tokens T, documents: scored documents S, summed over every micro-batch of every data-parallel
    rank (the trainer all-reduces scaledown_model.loss_counts of the collated batches before any backward).
    The step minimises ce_sum_total / T + rerank_weight * rerank_sum_total / S: the token-weighted mean
    cross-entropy (and document-weighted reranking MSE) of the global batch, whatever its split into
    micro-batches and ranks (as Transformers' Trainer does since 4.46 with num_items_in_batch).
    """
    tokens: float
    documents: float
    rerank_weight: float

    def objective(self, out: ScaleDownOutput) -> torch.Tensor:
        """One micro-batch's share of the step objective: ce_sum / T + rerank_weight * rerank_sum / S.
        The shares of all micro-batches on all ranks add up to the objective."""
        loss = out.ce_sum / max(self.tokens, 1.0)
        if out.rerank_sum is not None:
            loss = loss + self.rerank_weight * out.rerank_sum / max(self.documents, 1.0)
        return loss


class Backend(ABC):
    """Owns placement, parallelism, optimizer, mixed precision and checkpoint files.

    The loop (training/trainer.py) owns everything else: data order, phases, schedules of
    logging/eval/saving, and the resumable client state. A backend never imports the loop.

    Loss weighting contract (every backend, every stage): the loop hands each step a StepNorm with the global
    batch's counts. Each micro-batch backpropagates `norm.objective(out) * gradient_average`, a SUM over its
    tokens divided by the global count, never its own mean; `gradient_average` is the factor that cancels the
    backend's own averaging of gradients (DeepSpeed, DDP and NxD divide by the data-parallel size; a pipeline
    engine that backpropagates loss / num_microbatches needs that factor too). Then the accumulated gradient,
    after the backend's reductions, is the gradient of the global objective, identical for any split.
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

    @property
    def gradient_average(self) -> float:
        """What this backend divides accumulated gradients by when it reduces them: the data-parallel size for
        backends that average over ranks (DeepSpeed, NxD, DDP). A backend that sums gradients returns 1."""
        return float(self.dp_size)

    @abstractmethod
    def forward_backward(self, batch: dict[str, torch.Tensor], documents_as: str, norm: StepNorm
                         ) -> ScaleDownOutput:
        """Forward one micro-batch and accumulate gradients of norm.objective(out) * gradient_average;
        returns the model's output, detached."""

    @abstractmethod
    def optimizer_step(self) -> Optional[torch.Tensor | float]:
        """Clip, step, advance the schedule, zero grads; returns the pre-clip gradient norm (a tensor that may
        stay on the device until the loop logs it)."""

    @abstractmethod
    def learning_rates(self) -> dict[str, float]:
        """Current learning rate of each named parameter group."""

    @abstractmethod
    def save_checkpoint(self, root: str, tag: str, client_state: dict[str, Any]) -> str:
        """Write root/tag on every rank; return its path once all ranks are done (trainer_state.json comes after)."""

    @abstractmethod
    def load_checkpoint(self, path: str) -> dict[str, Any]:
        """Restore model, optimizer and schedule from a checkpoint folder; return the client state."""

    def checkpoint_files(self, path: str) -> list[str]:
        """The files this rank reads to resume from checkpoint `path` (checked before loading, on every rank)."""
        return []

    @abstractmethod
    def export_pretrained(self, directory: str) -> None:
        """Write the Hugging Face folder (ScaleDownModel.save_pretrained layout)."""

    @property
    @abstractmethod
    def model(self) -> ScaleDownModel:
        """The (unwrapped) model, for evaluation and generation."""

    # ---- hooks with eager defaults (an XLA backend overrides them) -----------------------------------
    # True: the loop adds host-computed gather indices to each batch (scaledown_model.add_gather_indices), so the
    # forward needs no device-to-host sync; static-shape backends (NxD) pad by key and select nothing: False
    host_gather_indices = True

    def train_step(self, batches: list[dict[str, torch.Tensor]], documents_as: str, norm: StepNorm
                   ) -> tuple[torch.Tensor, Optional[torch.Tensor | float]]:
        """One optimizer step over this rank's CPU micro-batches, weighted by the global batch's counts (norm).

        Returns ([this rank's share of the step objective (summed over ranks: the objective), cross-entropy
        summed over this rank's answer tokens, squared reranking error summed over its scored documents],
        pre-clip gradient norm of the global objective). Both may stay on the device: reading them makes the host
        wait for the GPU, so the loop reads them only when it logs (every logging_steps), not every step.
        """
        sums = None
        for batch in batches:
            out = self.forward_backward(self.to_device(batch), documents_as, norm)
            rerank = out.rerank_sum if out.rerank_sum is not None else torch.zeros_like(out.ce_sum)
            part = torch.stack([norm.objective(out).detach(), out.ce_sum.detach(), rerank.detach()]).double()
            sums = part if sums is None else sums + part
        if sums is None:
            sums = torch.zeros(3, dtype=torch.float64)
        return sums, self.optimizer_step()

    def collate_options(self, max_documents: int) -> dict[str, Any]:
        """Extra InputBuilder.collate arguments (static-shape backends pad every batch to max_documents)."""
        return {}

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in backward; NxD applies its own activation checkpointing instead."""
        self.model.enable_gradient_checkpointing()

    def eval_forward(self, batch: dict[str, torch.Tensor], documents_as: str) -> ScaleDownOutput:
        """Forward of one evaluation batch (already on the device)."""
        with self.autocast():
            return self.model(batch, documents_as=documents_as)

    def generate(self, batch: dict[str, torch.Tensor], documents_as: str) -> Optional[list[str]]:
        """Greedy answers of a CPU prompt batch; None where this backend cannot generate (pipeline stages)."""
        with self.autocast():
            return self.model.generate_from_batch(batch, documents_as, **self.generation_kwargs())

    # ---- helpers with single-process defaults --------------------------------------------------
    def to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return batch

    def autocast(self):
        return contextlib.nullcontext()

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        return values

    def barrier(self) -> None:
        pass

    object_group = None   # the process group gather_objects uses (None: the default one); NxD: its host gloo group

    def gather_objects(self, value: Any) -> Optional[list[Any]]:
        """Every rank's `value` (small picklable objects: RNG states), in rank order, on every rank; a collective
        (torch.distributed.all_gather_object). None when there is no process group to gather over."""
        if self.world_size == 1:
            return [value]
        if not dist.is_available() or not dist.is_initialized():
            return None
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value, group=self.object_group)
        return out

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


def detached(out: ScaleDownOutput) -> ScaleDownOutput:
    """The output's tensors without their graphs (what forward_backward returns)."""
    return replace(out, **{f.name: getattr(out, f.name).detach() for f in fields(out)
                           if isinstance(getattr(out, f.name), torch.Tensor)})
