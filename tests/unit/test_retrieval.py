# Retrieval: BM25 finds the known answer passage, SPLADE scores are the sparse dot products, indexes are reused.
import os

import pytest
import torch

from scaledown.data.bad_rows import BadRows
from scaledown.data.passage_store import PassageStore
from scaledown.data.retrieval import Hit, open_retriever
from scaledown.data.synthetic_corpus import write_synthetic_corpus
from scaledown.models.tiny_tokenizer import load_tiny_tokenizer


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    made = write_synthetic_corpus(str(root / "src"), num_queries=150, seed=11)
    store = PassageStore.build(str(root / "passages"), made.corpus_path, load_tiny_tokenizer(), "tiny", 128,
                               BadRows(), progress=False)
    return made, store, root


def test_bm25_recall_at_5_on_known_answers(synthetic):
    made, store, root = synthetic
    assert len(store) == 3 * len(made.gold_ids)   # short articles: one passage each
    retriever = open_retriever("bm25", str(root / "bm25"), store, progress=False)
    queries = [json_query for json_query in _queries(made.queries_path)]
    hits = retriever.search(queries, k=5)
    doc_ids = store.table.column("doc_id").to_pylist()
    recall = sum(gold in [doc_ids[h.index] for h in row] for gold, row in zip(made.gold_ids, hits)) / len(queries)
    assert recall >= 0.9, recall
    assert all(len(row) <= 5 and [h.score for h in row] == sorted((h.score for h in row), reverse=True)
               for row in hits)
    assert retriever.search(["zzzz qqqq"], k=5) == [[]]   # no shared word: nothing, rather than noise


def _queries(path):
    import json
    with open(path) as f:
        return [json.loads(line)["query"] for line in f]


def test_index_is_reused_and_rebuilt_when_passages_change(tmp_path):
    passages = ["alpha beta", "gamma delta", "beta gamma"]
    directory = str(tmp_path / "bm25")
    open_retriever("bm25", directory, passages, progress=False)
    stamp = os.stat(os.path.join(directory, "part-00000")).st_ino
    again = open_retriever("bm25", directory, passages, progress=False)
    assert os.stat(os.path.join(directory, "part-00000")).st_ino == stamp   # reused, not rebuilt
    assert [h.index for h in again.search(["beta"], k=3)[0]] == [0, 2]
    loaded = open_retriever("bm25", directory)                               # load only
    assert loaded.search(["delta"], k=2) == again.search(["delta"], k=2)
    changed = open_retriever("bm25", directory, passages + ["delta delta delta"], progress=False)
    assert os.stat(os.path.join(directory, "part-00000")).st_ino != stamp
    assert changed.search(["delta"], k=1)[0][0].index == 3


def test_splade_scores_are_sparse_max_pooled_dot_products(tmp_path):
    passages = [f"Entity{i} was born in city{i % 7} and plays the harp number {i}." for i in range(24)]
    split = open_retriever("splade", str(tmp_path / "s1"), passages, model="tiny", batch_size=8, part_size=8,
                           progress=False)
    whole = open_retriever("splade", str(tmp_path / "s2"), passages, model="tiny", batch_size=8,
                           part_size=1000, progress=False)
    assert len(os.listdir(tmp_path / "s1")) == 3 + 1                            # 3 parts + index.json
    queries = ["Where was Entity3 born?", "Who plays the harp?"]
    assert split.search(queries, k=6) == whole.search(queries, k=6)         # split-independent
    model, tokenizer, _ = split.encoder()

    def dense(text):   # SPLADE by hand on one unpadded text: max_t log(1 + relu(logits))
        ids = tokenizer(text, truncation=True, max_length=256, return_tensors="pt")
        with torch.no_grad():
            return torch.log1p(torch.relu(model(**ids).logits[0])).max(dim=0).values

    docs = torch.stack([dense(p) for p in passages])
    for query, row in zip(queries, split.search(queries, k=6)):
        scores = docs @ dense(query)
        best = torch.argsort(scores, descending=True)[:6].tolist()
        assert [h.index for h in row] == best
        assert [h.score for h in row] == pytest.approx(scores[best].tolist(), rel=1e-4)
    vectors = split.encode(passages[:3], 256)
    assert vectors.shape == (3, model.config.vocab_size) and vectors.nnz < 3 * model.config.vocab_size


def test_reranker_scores_and_reorders():
    from scaledown.data.rerank import CrossEncoderReranker, reorder
    reranker = CrossEncoderReranker("tiny", batch_size=3)
    docs = [["a cat sat", "the dog ran far away", "birds"], ["one", "two"]]
    scores = reranker.score(["what sat?", "count"], docs)
    assert [len(s) for s in scores] == [3, 2]
    with torch.no_grad():   # batch of pairs == each pair alone
        single = reranker.model(**reranker.tokenizer("what sat?", "birds", return_tensors="pt")).logits[0, 0]
    assert scores[0][2] == pytest.approx(float(single), abs=1e-5)
    kept, kept_scores = reorder(docs[0], [0.1, 0.9, 0.5], keep=2)
    assert kept == ["the dog ran far away", "birds"] and kept_scores == [0.9, 0.5]


def test_hits_merge_by_score_then_index():
    from scaledown.data.retrieval import merge_hits
    hits = [Hit(5, 1.0), Hit(2, 3.0), Hit(1, 1.0), Hit(9, 2.0)]
    assert merge_hits(hits, 3) == [Hit(2, 3.0), Hit(9, 2.0), Hit(1, 1.0)]
