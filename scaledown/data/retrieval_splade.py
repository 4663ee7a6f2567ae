# SPLADE retrieval: masked-LM logits -> sparse term weights, an inverted index in scipy.sparse, dot-product search.
"""A text's vector is max over its tokens of log(1 + relu(MLM logits)) (SPLADE's max pooling), one
weight per vocabulary term. Each index part stores its passages term-major (a vocab x passages CSR
matrix: a posting list per term) as .npy files that are memory-mapped on load, so workers on one
machine share the pages. A query's scores are one sparse product with each part.
Passages are encoded in batches aligned to global positions, so vectors do not depend on the split.
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from scaledown.data.prep_models import DEFAULT_SPLADE, load_masked_lm, pick_device
from scaledown.data.retriever_base import Hit, Retriever, documents_of, merge_hits
from scaledown.progress import show_progress

_ARRAYS = ("data", "indices", "indptr")


class SpladeRetriever(Retriever):
    kind = "splade"

    def __init__(self, directory: str, model: Optional[str] = None, device: str = "auto", batch_size: int = 32,
                 part_size: int = 100_000, doc_max_length: int = 256, query_max_length: int = 64,
                 trust_remote_code: bool = False, **_: Any):
        super().__init__(directory, model=model or DEFAULT_SPLADE)
        self.device_name = device
        self.batch_size = batch_size
        self.part_size = max(batch_size, part_size // batch_size * batch_size)  # parts start on batch bounds
        self.doc_max_length = doc_max_length
        self.query_max_length = query_max_length
        self.trust_remote_code = trust_remote_code
        self._encoder = None
        self._parts: list[tuple[int, Any]] = []

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "doc_max_length": self.doc_max_length, "batch_size": self.batch_size}

    # ---- encoding ------------------------------------------------------------------------------
    def encoder(self):
        if self._encoder is None:
            device = pick_device(self.device_name)
            model, tokenizer = load_masked_lm(self.model, device, self.trust_remote_code)
            self._encoder = (model, tokenizer, device)
        return self._encoder

    def encode(self, texts: Sequence[str], max_length: int):
        """Sparse (len(texts) x vocab) CSR matrix of SPLADE weights."""
        import scipy.sparse as sp
        model, tokenizer, device = self.encoder()
        rows = []
        for offset in range(0, len(texts), self.batch_size):
            batch = tokenizer(list(texts[offset:offset + self.batch_size]), truncation=True, max_length=max_length,
                              padding=True, return_tensors="pt", split_special_tokens=True).to(device)
            with torch.inference_mode():
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                weights = torch.log1p(torch.relu(logits.float())) * batch["attention_mask"].unsqueeze(-1)
                pooled = weights.max(dim=1).values
            rows.append(sp.csr_matrix(pooled.cpu().numpy()))
        vocab = self.encoder()[0].config.vocab_size
        return sp.vstack(rows, format="csr") if rows else sp.csr_matrix((0, vocab), dtype=np.float32)

    # ---- index ---------------------------------------------------------------------------------
    def plan_parts(self, num_passages: int) -> list[tuple[int, int]]:
        return [(start, min(start + self.part_size, num_passages))
                for start in range(0, num_passages, self.part_size)]

    def build_part(self, passages, start: int, stop: int, out_dir: str, progress: bool) -> None:
        import scipy.sparse as sp
        bar = tqdm(total=stop - start, desc=f"SPLADE encoding passages {start}-{stop}", unit=" passages",
                   disable=not show_progress(progress), mininterval=2)
        blocks = []
        for texts in documents_of(passages, start, stop, self.batch_size):
            blocks.append(self.encode(texts, self.doc_max_length))
            bar.update(len(texts))
        bar.close()
        postings = sp.vstack(blocks, format="csr").T.tocsr()  # vocab x passages: one posting list per term
        postings.sort_indices()
        for name in _ARRAYS:
            np.save(os.path.join(out_dir, f"{name}.npy"), getattr(postings, name))
        with open(os.path.join(out_dir, "shape.json"), "w") as f:
            json.dump(list(postings.shape), f)

    def load(self, parts: list[dict[str, Any]]) -> None:
        import scipy.sparse as sp
        self._parts = []
        for part in parts:
            folder = os.path.join(self.directory, part["dir"])
            arrays = [np.load(os.path.join(folder, f"{name}.npy"), mmap_mode="r") for name in _ARRAYS]
            with open(os.path.join(folder, "shape.json")) as f:
                shape = tuple(json.load(f))
            self._parts.append((part["start"], sp.csr_matrix(tuple(arrays), shape=shape, copy=False)))
        self.num_passages = sum(part["stop"] - part["start"] for part in parts)

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """Top-k passages by dot product of SPLADE vectors; passages sharing no term (score 0) are left out."""
        vectors = self.encode(queries, self.query_max_length)
        results: list[list[Hit]] = [[] for _ in queries]
        for start, postings in self._parts:
            scores = (vectors @ postings).tocsr()   # queries x passages of this part, only overlaps stored
            for row in range(scores.shape[0]):
                lo, hi = scores.indptr[row], scores.indptr[row + 1]
                values, columns = scores.data[lo:hi], scores.indices[lo:hi]
                if len(values) > k:
                    keep = np.argpartition(-values, k - 1)[:k]
                    # argpartition breaks ties arbitrarily: keep every passage tied with the k-th score
                    values_k = values[keep].min()
                    keep = np.nonzero(values >= values_k)[0]
                    values, columns = values[keep], columns[keep]
                results[row] += [Hit(start + int(c), float(v)) for c, v in zip(columns, values) if v > 0]
        return [merge_hits(hits, k) for hits in results]
