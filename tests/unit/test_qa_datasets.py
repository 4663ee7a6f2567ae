# Benchmark readers (KILT, PopQA, ASQA formats), BM25 retrieval with relevance labels, the OSCAR-style table.
import json
import os

import pytest

from scaledown.errors import DataError
from scaledown.evaluation import qa_datasets
from scaledown.evaluation.paper_table import format_table
from scaledown.evaluation.retrieve import CorpusRetriever, Passage

ASSETS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "kilt")


def test_each_layout_becomes_a_row():
    kilt = {"id": "q1", "input": "Who?", "output": [{"answer": "Ann", "provenance": [{"wikipedia_id": 7}]},
                                                   {"answer": ""}, {"answer": "Anne"}]}
    assert qa_datasets.to_row(kilt, "f line 1") == {"id": "q1", "query": "Who?", "answers": ["Ann", "Anne"],
                                                   "provenance": ["7"]}
    popqa = {"id": 3, "question": "Where?", "possible_answers": json.dumps(["Rome", "Roma"])}
    assert qa_datasets.to_row(popqa, "w")["answers"] == ["Rome", "Roma"]
    asqa = {"sample_id": "s", "ambiguous_question": "When?", "qa_pairs": [{"short_answers": ["1990"]},
                                                                          {"short_answers": ["1991", ""]}]}
    row = qa_datasets.to_row(asqa, "w")
    assert row["query"] == "When?" and row["answers"] == ["1990", "1991"] and row["id"] == "s"
    ready = {"query": "q", "documents": ["d"], "answer": "a"}
    assert qa_datasets.to_row(ready, "w") == ready
    with pytest.raises(DataError, match="f line 9.*unknown record format"):
        qa_datasets.to_row({"text": "x"}, "f line 9")
    with pytest.raises(DataError, match="no gold answer"):
        qa_datasets.to_row({"input": "Who?", "output": [{"answer": ""}]}, "f line 2")


def test_local_copies_are_found_by_name():
    for bench in qa_datasets.parse_benchmarks("all"):
        path = qa_datasets.local_file(bench, ASSETS)
        assert path and os.path.basename(path).startswith(bench.name)
        source, located = qa_datasets.load_records(bench, ASSETS)
        assert len(qa_datasets.to_rows(located)) == 6
    with pytest.raises(DataError, match="nq, triviaqa|asqa"):
        qa_datasets.parse_benchmarks("nq,squad")
    with pytest.raises(DataError, match="no local copy of nq"):
        qa_datasets.load_records(qa_datasets.BENCHMARKS["nq"], os.path.dirname(ASSETS))


def test_bm25_retrieval_labels_relevance_from_provenance(tmp_path):
    from scaledown.models.tiny_tokenizer import load_tiny_tokenizer
    retriever = CorpusRetriever(os.path.join(ASSETS, "corpus.jsonl"), str(tmp_path / "index"), load_tiny_tokenizer(),
                                "tiny", 32, kind="bm25", progress=False)
    assert len(retriever.store) == 72                     # short pages: one passage each
    rows = qa_datasets.to_rows(qa_datasets.load_records(qa_datasets.BENCHMARKS["nq"], ASSETS)[1])
    qa_datasets.attach_documents(rows, retriever, k=4)
    titles = set(retriever.store.table.column("title").to_pylist())
    for row in rows:
        # BM25 leaves out passages that share no word with the query
        assert 1 <= len(row["documents"]) <= 4 and len(row["relevance"]) == len(row["documents"])
        entity = next(w for w in row["query"].rstrip("?").split() if w in titles)
        assert row["documents"][0].startswith(entity + ": ")   # the asked entity's page ranks first
        assert row["relevance"][0] == 1.0 and sum(row["relevance"]) == 1.0
    again = CorpusRetriever(os.path.join(ASSETS, "corpus.jsonl"), str(tmp_path / "index"), load_tiny_tokenizer(),
                            "tiny", 32, kind="bm25", progress=False)   # the store and index are reused
    assert [p.text for p in again.retrieve([rows[0]["query"]], 4)[0]] == rows[0]["documents"]


def test_answer_containment_labels_without_page_ids():
    class Fixed:
        def retrieve(self, queries, k):
            return [[Passage("Rome is big"), Passage("Paris is big")] for _ in queries]
    rows = qa_datasets.attach_documents([{"query": "q", "answers": ["Paris"]}], Fixed(), k=2)
    assert rows[0]["relevance"] == [0.0, 1.0] and rows[0]["documents"] == ["Rome is big", "Paris is big"]


def test_table_has_oscar_rows_and_the_user_rows():
    results = {"nq": {"scaledown": {"match": 0.5}, "uncompressed": {"match": 0.7}},
               "asqa": {"scaledown": {"match": 0.25}, "uncompressed": {"match": 0.5}}}
    table = format_table(results, "match", {"scaledown": 1.5, "uncompressed": 20.0}, model_name="mine")
    lines = table.splitlines()
    ours = next(l for l in lines if "your model (compressed)" in l)
    cells = [c.strip() for c in ours.split("|")[1:-1]]
    # Backbone, Method, ASQA, HotpotQA, NQ, TriviaQA, PopQA, Avg, TFLOPs
    assert cells == ["mine", "your model (compressed)", "0.25", "–", "0.50", "–", "–", "0.38", "1.50"]
    assert any("Mistral-7B, no compression" in l and "0.68*" in l for l in lines)   # Table 3 Match average
    judged = format_table({"nq": {"scaledown": {"judge": 0.8}}}, "judge")
    assert "| 0.82 | 0.62 | 0.80 | 0.90 | 0.61 | 0.75 |" in judged   # Table 1 per-dataset LLM-eval
