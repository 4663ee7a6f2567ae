# Cross-encoder reranking (OSCAR: naver/trecdl22-crossencoder-debertav3): score (query, passage) pairs, reorder.
from __future__ import annotations

from typing import Optional, Sequence

import torch

from scaledown.data.prep_models import DEFAULT_RERANKER, load_cross_encoder, pick_device


class CrossEncoderReranker:
    """Scores are the classifier's raw relevance logit: what OSCAR's reranking head is distilled on (MSE)."""

    def __init__(self, model: Optional[str] = None, device: str = "auto", batch_size: int = 32,
                 max_length: int = 256, trust_remote_code: bool = False):
        self.name = model or DEFAULT_RERANKER
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.max_length = max_length     # BERGEN's DeBERTa-v3 reranker config: 256
        self.model, self.tokenizer = load_cross_encoder(self.name, self.device, trust_remote_code)

    def score(self, queries: Sequence[str], documents: Sequence[Sequence[str]]) -> list[list[float]]:
        """One score per (query, document), in the documents' order."""
        pairs = [(q, d) for q, docs in zip(queries, documents) for d in docs]
        flat: list[float] = []
        for offset in range(0, len(pairs), self.batch_size):
            chunk = pairs[offset:offset + self.batch_size]
            batch = self.tokenizer([q for q, _ in chunk], [d for _, d in chunk], truncation="only_second",
                                   max_length=self.max_length, padding=True, return_tensors="pt",
                                   split_special_tokens=True).to(self.device)   # '[SEP]' in a text stays text
            with torch.inference_mode():
                logits = self.model(**batch).logits.float()
            # one label: the relevance logit; two labels (irrelevant, relevant): the relevant one
            flat += logits[:, -1].cpu().tolist()
        out, position = [], 0
        for docs in documents:
            out.append(flat[position:position + len(docs)])
            position += len(docs)
        return out


def reorder(documents: Sequence[str], scores: Sequence[float], keep: int) -> tuple[list[str], list[float]]:
    """Documents by descending score (ties keep retrieval order), the best `keep` of them."""
    order = sorted(range(len(documents)), key=lambda j: (-scores[j], j))[:keep]
    return [documents[j] for j in order], [float(scores[j]) for j in order]
