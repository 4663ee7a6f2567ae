# long_documents='chunk' with the per-query cap: the chunks most relevant to the query fill it; every drop is counted.
import logging

from conftest import tiny_config
from scaledown.data import ScaleDownDataset

QUERY = "Where was Dravok born?"
ANSWER_SENTENCE = "Dravok was born in Pelmar."


def _filler(count, topic="river Olan"):
    return " ".join(f"The {topic} runs past hill number {i} and a mill." for i in range(count))


def _seen_by_model(ds, config, limit):
    """Text of the documents the compressor reads for each row (the collator applies the same cap)."""
    from scaledown.models import loading
    from scaledown.models.inputs import InputBuilder
    tok = loading.load_tokenizer(config.generator_model_name)
    batch = InputBuilder(config, tok).collate(ds.rows, max_documents=limit)
    return [tok.decode(ids[mask.bool()]) for ids, mask in zip(batch["compressor_input_ids"].flatten(0, 1),
                                                                 batch["compressor_attention_mask"].flatten(0, 1))]


def test_answer_in_second_half_of_long_document_survives(caplog):
    config = tiny_config(long_documents="chunk")            # doc_max_length 32, num_documents_train 3
    document = _filler(10) + " " + ANSWER_SENTENCE + " " + _filler(3, "road Tam")
    row = {"query": QUERY, "documents": [document, _filler(2, "lake Vey")], "answer": "Pelmar",
           "reranking_scores": [0.9, 0.1]}
    with caplog.at_level(logging.WARNING):
        ds = ScaleDownDataset([row], config)
    assert len(ds[0]["documents"]) == config.num_documents_train
    assert any(ANSWER_SENTENCE in d for d in ds[0]["documents"])             # the whole sentence, in one chunk
    assert any(ANSWER_SENTENCE in text for text in _seen_by_model(ds, config, config.num_documents_train))
    # every chunk keeps its document's reranking score
    assert ds[0]["reranking_scores"][[ANSWER_SENTENCE in d for d in ds[0]["documents"]].index(True)] == 0.9
    assert set(ds[0]["reranking_scores"]) <= {0.9, 0.1}
    warning = next(r.getMessage() for r in caplog.records if "chunks beyond" in r.getMessage())
    assert ds.num_documents_dropped > 0 and f"{ds.num_documents_dropped} chunks beyond the 3 per query" in warning


def test_eval_budget_is_num_documents_eval():
    config = tiny_config(long_documents="chunk", num_documents_eval=2)
    document = _filler(12) + " " + ANSWER_SENTENCE
    ds = ScaleDownDataset([{"query": QUERY, "documents": [document], "answers": ["Pelmar"]}], config,
                          require_answer=False)
    assert len(ds[0]["documents"]) == 2 and any(ANSWER_SENTENCE in d for d in ds[0]["documents"])


def test_rows_without_long_documents_keep_their_order_and_count_the_cap(caplog):
    config = tiny_config()                                  # truncate; 3 documents per query
    docs = [f"Short document {i}." for i in range(5)]
    with caplog.at_level(logging.WARNING):
        ds = ScaleDownDataset([{"query": QUERY, "documents": docs, "answer": "a"}] * 2, config)
    assert ds.num_documents_dropped == 4 and ds[0]["documents"] == docs
    assert any("their 4 documents after the first 3 are not used" in r.getMessage() for r in caplog.records)
    config = tiny_config(long_documents="chunk")
    chunked = ScaleDownDataset([{"query": QUERY, "documents": docs + [_filler(6)], "answer": "a"}], config)
    from scaledown.data.chunk_select import split_document
    from scaledown.models import loading
    pieces = len(split_document(loading.load_tokenizer(config.generator_model_name), _filler(6), 32))
    assert pieces > 1 and len(chunked[0]["documents"]) == 3
    assert chunked.num_documents_dropped == len(docs) + pieces - 3
