# Collator: rows -> padded tensors through the model's InputBuilder (pads to the longest in the batch).
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from scaledown.models.inputs import InputBuilder


@dataclass
class ScaleDownCollator:
    """`DataLoader(dataset, collate_fn=ScaleDownCollator(model.inputs))`.

    mode: 'memory' (compressed documents), 'text' (uncompressed RAG) or 'none' (no documents).
    max_documents keeps the top-k documents of each row (OSCAR: 5 in training, 10 in evaluation).
    pad_documents_to fixes K for backends that need static shapes (XLA).
    """
    inputs: InputBuilder
    mode: str = "memory"
    max_documents: Optional[int] = None
    with_answers: bool = True
    pad_documents_to: Optional[int] = None

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self.inputs.collate(rows, mode=self.mode, with_answers=self.with_answers,
                                   max_documents=self.max_documents, pad_documents_to=self.pad_documents_to)


def count_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Real (non-padding) tokens a batch feeds through compressor and generator: the tokens/s numerator."""
    total = int(batch["attention_mask"].sum())
    if "compressor_attention_mask" in batch:
        total += int(batch["compressor_attention_mask"].sum())
    return total
