# The whole data pipeline in one process with tiny models: corpus -> retrieval -> rerank -> teacher -> file -> training.
import json

import pytest

from scaledown.data import ScaleDownDataset
from scaledown.data.prepare_dataset import prepare_main
from scaledown.data.synthetic_corpus import write_synthetic_corpus

TINY = ["--retriever_model", "tiny", "--reranker", "tiny", "--teacher", "tiny", "--max_answer_tokens", "6",
        "--batch_size", "4", "--block_size", "8", "--progress", "false"]


def test_pipeline_end_to_end_then_trains(tmp_path, config, capsys):
    made = write_synthetic_corpus(str(tmp_path / "src"), num_queries=20, seed=3)
    with open(made.corpus_path, "a") as f:   # two bad lines, skipped and counted
        f.write('{"_id": "broken", "text": ["cut off\n')
        f.write(json.dumps({"_id": "empty", "wikipedia_title": "Empty", "text": ["Empty\n"]}) + "\n")
    out = tmp_path / "out" / "train.json"
    args = ["--queries", made.queries_path, "--corpus_path", made.corpus_path, "--output_file", str(out),
            "--top_k", "3", "--retrieve_k", "5", "--skip_bad_rows", *TINY]
    assert prepare_main(args) == 0
    printed = capsys.readouterr().out
    assert "skipped 2 bad corpus rows" in printed and "rows/s" in printed

    summary = json.loads((tmp_path / "out" / "train.prep" / "summary.json").read_text())
    assert summary["bad_corpus_rows"] == {"malformed JSON lines": 1, "empty passages": 1}
    assert summary["rows"] == 20 - sum(summary["skipped"].values()) and summary["rows"] >= 15

    rows = json.loads(out.read_text())
    corpus_docs = {json.loads(l)["text"][1].strip() for l in open(made.corpus_path).readlines()[:60]}
    queries = [json.loads(l)["query"] for l in open(made.queries_path)]
    assert [r["query"] for r in rows] == [q for q in queries if q in {r["query"] for r in rows}]  # query order
    from scaledown.data.rerank import CrossEncoderReranker
    reranker = CrossEncoderReranker("tiny")
    for row in rows:
        assert len(row["documents"]) == 3 and row["answer"].strip()
        assert all(d.split(": ", 1)[1] in corpus_docs for d in row["documents"])   # "{title}: {text}" passages
        assert row["reranking_scores"] == sorted(row["reranking_scores"], reverse=True)
    again = reranker.score([rows[0]["query"]], [rows[0]["documents"]])[0]
    assert again == pytest.approx(rows[0]["reranking_scores"], abs=1e-5)

    dataset = ScaleDownDataset(str(out), config)
    assert len(dataset) == len(rows)
    from scaledown import ScaleDownModel
    from scaledown.training import ScaleDownTrainer
    result = ScaleDownTrainer(ScaleDownModel(config), config, dataset, progress=False).train()
    assert result.steps == config.max_steps and all(loss == loss and loss > 0 for loss in result.losses)


def test_bm25_pipeline_puts_the_answer_passage_in_the_rows(tmp_path):
    made = write_synthetic_corpus(str(tmp_path / "src"), num_queries=30, seed=8)
    out = tmp_path / "train.jsonl"
    assert prepare_main(["--queries", made.queries_path, "--corpus_path", made.corpus_path, "--retriever", "bm25",
                         "--teacher", "tiny", "--max_answer_tokens", "4", "--output_file", str(out),
                         "--progress", "false"]) == 0
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    articles = {json.loads(l)["_id"]: json.loads(l)["text"][1].strip() for l in open(made.corpus_path)}
    assert len(rows) == 30   # every query kept, in query order
    found = sum(any(d.endswith(articles[gold]) for d in row["documents"]) for row, gold in zip(rows, made.gold_ids))
    assert found / len(rows) >= 0.9
    assert all("reranking_scores" not in row and 1 <= len(row["documents"]) <= 5 for row in rows)
