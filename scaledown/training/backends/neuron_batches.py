# Fixed-shape batches for XLA: pad every micro-batch of a step to one bucketed shape; the pipeline module's forward.
"""Each new tensor shape is a new graph for neuronx-cc (minutes to compile), so the NxD backend feeds the
device shapes from a small set: documents per row are fixed by collate(pad_documents_to=...), and token
lengths are rounded up to a multiple of `bucket` (compressor inputs padded on the left, generator inputs on
the side collate used). Padding positions carry attention 0, label -100 and memory slot -1, so the loss is
the same as on the unpadded batch.
"""
from __future__ import annotations

import torch
from torch import nn

from scaledown.training.backends.neuron_config import PIPELINE_INPUTS
from scaledown.training.backends.neuron_trace import mask_calls

TOKEN_BUCKET = 64


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _pad(tensor: torch.Tensor, length: int, value, left: bool) -> torch.Tensor:
    missing = length - tensor.shape[-1]
    if missing <= 0:
        return tensor
    pad = tensor.new_full(tensor.shape[:-1] + (missing,), value)
    return torch.cat([pad, tensor] if left else [tensor, pad], dim=-1)


def pad_to_buckets(batches: list[dict[str, torch.Tensor]], pad_id: int, compressor_pad_id: int,
                   bucket: int = TOKEN_BUCKET) -> list[dict[str, torch.Tensor]]:
    """Every batch padded to the same token lengths (the longest in the list, rounded up to `bucket`)."""
    if not batches:
        return batches
    gen = _round_up(max(b["input_ids"].shape[-1] for b in batches), bucket)
    has_comp = "compressor_input_ids" in batches[0]
    comp = _round_up(max(b["compressor_input_ids"].shape[-1] for b in batches), bucket) if has_comp else 0
    out = []
    for batch in batches:
        left = "labels" not in batch     # prompts for generation are left padded, training rows right padded
        padded = dict(batch)
        for key, value in (("input_ids", pad_id), ("attention_mask", 0), ("memory_slots", -1), ("labels", -100)):
            if key in batch:
                padded[key] = _pad(batch[key], gen, value, left)
        if has_comp:
            padded["compressor_input_ids"] = _pad(batch["compressor_input_ids"], comp, compressor_pad_id, True)
            padded["compressor_attention_mask"] = _pad(batch["compressor_attention_mask"], comp, 0, True)
        out.append(padded)
    return out


def with_loss_weights(batch: dict[str, torch.Tensor], ce_weight: float, rerank_weight: float
                      ) -> dict[str, torch.Tensor]:
    """The batch plus per-row copies of the loss weights PipelineModule multiplies the sums by (float32, (B,))."""
    rows = batch["input_ids"].shape[0]
    return {**batch, "ce_weight": torch.full((rows,), float(ce_weight)),
            "rerank_weight": torch.full((rows,), float(rerank_weight))}


def concatenate(batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One CPU batch of the step's micro-batches (NxDPPModel.run_train splits dim 0 into num_microbatches)."""
    return {key: torch.cat([b[key] for b in batches]) for key in PIPELINE_INPUTS}


class PipelineModule(nn.Module):
    """What NxDPPModel wraps: the ScaleDownModel's compressor and generator, registered in forward order.

    NxD's auto-partition lists decoder layers in module-registration order; registering the compressor first
    makes that the forward order (compressor layers, then generator layers), which is the plan's stage rule.
    Parameter names stay ScaleDownModel's (compressor.*, generator.*). The forward takes the collated batch as
    tensors (NxD traces it) and returns ce_sum * ce_weight + lambda * rerank_sum * rerank_weight of
    ScaleDownModel.forward (compressed documents): weights 1/T, 1/S give the batch's mean loss; in training the
    backend passes the global batch's counts (base.StepNorm) times the factors NxD's averaging divides by.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.compressor = model.compressor
        self.generator = model.generator
        object.__setattr__(self, "scaledown_model", model)   # not a submodule: its children are ours
        self.mask_calls = mask_calls(self)   # leaf modules the tracer routes mask builders through (no weights)

    def forward(self, compressor_input_ids, compressor_attention_mask, document_mask, input_ids, attention_mask,
                memory_slots, labels, reranking_scores, reranking_mask, ce_weight, rerank_weight):
        batch = {"compressor_input_ids": compressor_input_ids, "compressor_attention_mask": compressor_attention_mask,
                 "document_mask": document_mask, "input_ids": input_ids, "attention_mask": attention_mask,
                 "memory_slots": memory_slots, "labels": labels, "reranking_scores": reranking_scores,
                 "reranking_mask": reranking_mask}
        model = self.scaledown_model
        out = type(model).forward(model, batch, documents_as="memory")
        loss = out.ce_sum * ce_weight[0]   # every row carries the same weight: row 0 of any micro-batch has it
        if out.rerank_sum is not None:
            loss = loss + model.config.reranking_loss_weight * out.rerank_sum * rerank_weight[0]
        return loss
