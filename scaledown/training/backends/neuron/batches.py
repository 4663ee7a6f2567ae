# Fixed-shape batches for XLA and NxD pipelines: every micro-batch of a run padded to shapes fixed by the config.
"""Each new tensor shape is a new graph for neuronx-cc (minutes to compile), and NxDPPModel keeps the
inter-stage tensor shapes of its first call for the rest of the run (pipeline/model.py: shape_traced; the
receive buffers of pipeline/comm.py have those shapes): a later micro-batch of another shape would make the
stages exchange tensors of different sizes. So the shapes come from the configuration, not the batch:
documents per row are fixed by collate(pad_documents_to=...), token lengths are the longest a row can have
(query_max_length, doc_max_length, answer_max_length, the prompt template: `StaticShapes.for_inputs`),
rounded up to a multiple of `TOKEN_BUCKET`; compressor inputs are padded on the left, generator inputs on the
side collate used. Under pipeline parallelism the rows of an evaluation batch are also padded to the
pipeline micro-batch. Padding positions carry attention 0, label -100, memory slot -1 and no reranking
target, so the loss equals the unpadded batch's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from scaledown.models.inputs import PRETRAINING_TASKS
from scaledown.training.backends.neuron.nxd_config import PIPELINE_INPUTS
from scaledown.training.backends.neuron.trace import mask_calls

TOKEN_BUCKET = 64


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _pad(tensor: torch.Tensor, length: int, value, left: bool) -> torch.Tensor:
    missing = length - tensor.shape[-1]
    if missing <= 0:
        return tensor
    pad = tensor.new_full(tensor.shape[:-1] + (missing,), value)
    return torch.cat([pad, tensor] if left else [tensor, pad], dim=-1)


def longest_prompt(inputs, num_documents: int, mode: str) -> int:
    """Most prompt tokens collate can produce for `num_documents` documents (any task, query at its maximum)."""
    cfg = inputs.config
    per_document = inputs.l if mode == "memory" else cfg.doc_max_length
    longest = 0
    for task in (None, *PRETRAINING_TASKS):
        segments = inputs._segments(0 if mode == "none" else num_documents, task)
        length = sum(len(s) for s in segments if isinstance(s, tuple))
        length += sum(per_document for s in segments if isinstance(s, int))
        length += cfg.query_max_length if "Q" in segments else 0
        longest = max(longest, length)
    return longest


def longest_compressor_input(inputs) -> int:
    """Most compressor tokens of one document: the template around the query and document at their maxima."""
    tok = inputs.compressor_tokenizer
    frame = len(inputs.compressor_ids("q", "d")) - len(inputs.query_ids("q", tok)) - len(inputs.document_ids("d", tok))
    return frame + inputs.config.query_max_length + inputs.config.doc_max_length


@dataclass(frozen=True)
class StaticShapes:
    """Token lengths every batch of one documents mode is padded to (`rows`: pipeline micro-batch rows, or None)."""
    generator: int
    compressor: int
    pad_id: int
    compressor_pad_id: int
    rows: Optional[int] = None

    @classmethod
    def for_inputs(cls, inputs, num_documents: int, mode: str, rows: Optional[int] = None,
                   bucket: int = TOKEN_BUCKET) -> "StaticShapes":
        cfg = inputs.config
        target = max(cfg.answer_max_length, cfg.doc_max_length + 1)    # answers, or pretraining chunks + EOS
        return cls(_round_up(longest_prompt(inputs, num_documents, mode) + target, bucket),
                   _round_up(longest_compressor_input(inputs), bucket), inputs.pad_id, inputs.compressor_pad_id, rows)

    def pad(self, batches: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        """Every batch padded to these lengths (and rows); RuntimeError when one is longer (a bug upstream)."""
        out = []
        for batch in batches:
            for key, limit in (("input_ids", self.generator), ("compressor_input_ids", self.compressor)):
                if key in batch and batch[key].shape[-1] > limit:
                    raise RuntimeError(f"{key} has {batch[key].shape[-1]} tokens, more than the static {limit} "
                                       f"computed from the config: the static shape rule misses a case")
            left = "labels" not in batch     # prompts for generation are left padded, training rows right padded
            padded = dict(batch)
            for key, value in (("input_ids", self.pad_id), ("attention_mask", 0), ("memory_slots", -1),
                               ("labels", -100)):
                if key in batch:
                    padded[key] = _pad(batch[key], self.generator, value, left)
            if "compressor_input_ids" in batch:
                padded["compressor_input_ids"] = _pad(batch["compressor_input_ids"], self.compressor,
                                                      self.compressor_pad_id, True)
                padded["compressor_attention_mask"] = _pad(batch["compressor_attention_mask"], self.compressor, 0, True)
            out.append(self._pad_rows(padded))
        return out

    def _pad_rows(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Extra rows that count nothing: no label, no document, no reranking target (repeats of row 0 otherwise)."""
        if self.rows is None:
            return batch
        have = batch["input_ids"].shape[0]
        if have > self.rows:
            raise RuntimeError(f"a batch of {have} rows does not fit the pipeline micro-batch of {self.rows} rows")
        if have == self.rows:
            return batch
        index = torch.arange(self.rows) % have
        out = {k: v[index] for k, v in batch.items()}
        extra = slice(have, self.rows)
        out["labels"][extra] = -100
        out["reranking_mask"][extra] = False
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
