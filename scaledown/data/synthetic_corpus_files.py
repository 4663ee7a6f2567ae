# The synthetic task as a retrieval corpus (KILT-style JSON lines) + a queries file, gold passage of each known.
"""Offline stand-in for Wikipedia-KILT and MS MARCO: every synthetic example's documents become
corpus articles (title = the entity, text = KILT's paragraph list whose first paragraph repeats the
title) and its question a query. `gold_ids[i]` is the id of the article that answers query i, so
retrieval quality can be measured (recall@k) and the whole pipeline tried without downloads:

    python -m scaledown.data.synthetic_corpus --num_queries 200 --output_dir demo
    python -m scaledown.data.prepare_dataset --queries demo/queries.jsonl --corpus_path demo/corpus.jsonl \\
        --retriever bm25 --teacher tiny --output_file demo/train.json
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from scaledown.atomic_files import atomic_open
from scaledown.data.synthetic import generate_examples


@dataclass
class SyntheticCorpus:
    corpus_path: str
    queries_path: str
    gold_ids: list[str]      # per query: the id of the article holding its answer


def write_synthetic_corpus(directory: str, num_queries: int, seed: int = 0) -> SyntheticCorpus:
    os.makedirs(directory, exist_ok=True)
    corpus_path = os.path.join(directory, "corpus.jsonl")
    queries_path = os.path.join(directory, "queries.jsonl")
    gold_ids = []
    with atomic_open(corpus_path) as corpus, atomic_open(queries_path) as queries:
        for i, row in enumerate(generate_examples(num_queries, seed=seed)):
            for j, document in enumerate(row["documents"]):
                title = document.split()[0]
                corpus.write(json.dumps({"_id": f"{i}-{j}", "wikipedia_title": title,
                                         "text": [title + "\n", document + "\n"]}) + "\n")
            gold_ids.append(f"{i}-{row['reranking_scores'].index(1.0)}")
            queries.write(json.dumps({"id": str(i), "query": row["query"]}) + "\n")
    return SyntheticCorpus(corpus_path, queries_path, gold_ids)
