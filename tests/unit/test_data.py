# ScaleDownDataset: accepted inputs, every malformed-row error (file, row/line, field, fix), long documents.
import json
import logging

import pytest

from conftest import tiny_config
from scaledown.data import ScaleDownDataset
from scaledown.errors import DataError

GOOD = {"query": "Where was Dravok born?", "documents": ["Dravok was born in Pelmar."], "answer": "Pelmar"}


def write(tmp_path, name, text, binary=False):
    path = tmp_path / name
    (path.write_bytes if binary else path.write_text)(text)
    return str(path)


def test_lists_files_and_datasets(tmp_path):
    import datasets
    rows = [GOOD, dict(GOOD, reranking_scores=[0.5])]
    assert len(ScaleDownDataset(rows)) == 2
    assert len(ScaleDownDataset(write(tmp_path, "a.json", json.dumps(rows)))) == 2
    assert len(ScaleDownDataset(write(tmp_path, "a.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n"))) == 2
    ds = datasets.Dataset.from_list([GOOD, GOOD, GOOD])
    assert ScaleDownDataset(ds)[2]["answer"] == "Pelmar"
    parquet = tmp_path / "a.parquet"
    ds.to_parquet(str(parquet))
    assert len(ScaleDownDataset(str(parquet))) == 3


@pytest.mark.parametrize("row,words", [
    ({"documents": ["d"], "answer": "a"}, ["row 2", "'query'"]),
    ({"query": "q", "answer": "a"}, ["row 2", "'documents'"]),
    ({"query": "q", "documents": ["d"]}, ["row 2", "'answer'"]),
    ({"query": 3, "documents": ["d"], "answer": "a"}, ["row 2", "'query'", "string"]),
    ({"query": "  ", "documents": ["d"], "answer": "a"}, ["row 2", "'query'", "empty"]),
    ({"query": "q", "documents": [], "answer": "a"}, ["row 2", "'documents'", "empty list"]),
    ({"query": "q", "documents": "one doc", "answer": "a"}, ["row 2", "'documents'", "wrap"]),
    ({"query": "q", "documents": ["d", 4], "answer": "a"}, ["row 2", "documents[2]"]),
    ({"query": "q", "documents": ["d", " "], "answer": "a"}, ["row 2", "documents[2]", "empty"]),
    ({"query": "q", "documents": ["d"], "answer": 5}, ["row 2", "'answer'", "string"]),
    ({"query": "q", "documents": ["d", "e"], "answer": "a", "reranking_scores": [1.0]},
     ["row 2", "reranking_scores", "1 values", "2"]),
    ({"query": "q", "documents": ["d"], "answer": "a", "reranking_scores": [float("nan")]},
     ["row 2", "reranking_scores[1]", "finite"]),
    ({"query": "q", "documents": ["d"], "answer": "a", "reranking_scores": ["high"]},
     ["row 2", "reranking_scores[1]", "number"]),
    ("just a string", ["row 2", "object"]),
])
def test_bad_rows_in_json(tmp_path, row, words):
    path = write(tmp_path, "data.json", json.dumps([GOOD, row]))
    with pytest.raises(DataError) as info:
        ScaleDownDataset(path)
    for word in words + [path]:
        assert word in str(info.value)


def test_jsonl_errors_use_file_line_numbers(tmp_path):
    path = write(tmp_path, "d.jsonl", json.dumps(GOOD) + "\n\n" + json.dumps({"query": "q", "answer": "a"}) + "\n")
    with pytest.raises(DataError, match=r"d.jsonl line 3: missing field 'documents'"):
        ScaleDownDataset(path)
    path = write(tmp_path, "e.jsonl", json.dumps(GOOD) + "\n{\"query\": \"q\",,}\n")
    with pytest.raises(DataError, match=r"e.jsonl line 2 column \d+: malformed JSON"):
        ScaleDownDataset(path)


def test_file_level_errors(tmp_path):
    cases = {
        write(tmp_path, "empty.json", ""): "is empty",
        write(tmp_path, "list.json", "[]"): "empty list",
        write(tmp_path, "obj.json", json.dumps({"rows": [GOOD]})): "top-level object",
        write(tmp_path, "bad.json", '[\n  {"query": "q",\n  "documents": ["d"] "answer": "a"}\n]'):
            "line 3 column 22: malformed JSON",
        write(tmp_path, "latin.json", b'[{"query": "caf\xe9"}]', binary=True): "line 1 column 16: text is not valid UTF-8",
        str(tmp_path / "missing.json"): "does not exist",
    }
    for path, message in cases.items():
        with pytest.raises(DataError) as info:
            ScaleDownDataset(path)
        assert message in str(info.value) and path in str(info.value)
    with pytest.raises(DataError, match="empty list"):
        ScaleDownDataset([])
    with pytest.raises(DataError, match="pick a split"):
        ScaleDownDataset({"train": []})


def test_eval_rows_may_have_answers_list():
    row = {"query": "q", "documents": ["d"], "answers": ["a", "b"]}
    assert ScaleDownDataset([row], require_answer=False)[0]["answers"] == ["a", "b"]
    assert ScaleDownDataset([row])[0]["answers"] == ["a", "b"]  # a list of golds also trains (first one)


def test_long_documents_truncated_with_one_counted_warning(caplog):
    config = tiny_config()
    long_doc = " ".join(["Dravok was born in Pelmar."] * 20)
    rows = [dict(GOOD, documents=[long_doc, "short"]), dict(GOOD, documents=[long_doc])]
    with caplog.at_level(logging.WARNING):
        ds = ScaleDownDataset(rows, config)
    warnings = [r for r in caplog.records if "doc_max_length" in r.getMessage()]
    assert len(warnings) == 1 and "2 of 3 documents" in warnings[0].getMessage()
    assert ds.num_truncated == 2 and ds[0]["documents"][0] == long_doc


def test_long_documents_chunked(tmp_path):
    config = tiny_config(long_documents="chunk", num_documents_train=10)  # room for every chunk: none dropped
    long_doc = " ".join(f"Dravok plays the harp number {i}." for i in range(12))
    ds = ScaleDownDataset([dict(GOOD, documents=[long_doc, "short"], reranking_scores=[1.0, 0.0])], config)
    docs = ds[0]["documents"]
    assert len(docs) > 2 and docs[-1] == "short"
    assert len(ds[0]["reranking_scores"]) == len(docs) and ds[0]["reranking_scores"][0] == 1.0
    from scaledown.models.loading import load_tokenizer
    tok = load_tokenizer(config.generator_model_name)
    assert all(len(tok(" " + d, add_special_tokens=False)["input_ids"]) <= config.doc_max_length + 1 for d in docs)


def test_prepare_dataset_synthetic_file_validates(tmp_path, subprocess_env):
    import subprocess
    import sys
    out = tmp_path / "test_data.json"
    proc = subprocess.run([sys.executable, "-m", "scaledown.data.prepare_dataset", "--num_synthetic_queries", "100",
                           "--output_file", str(out)], env=subprocess_env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ds = ScaleDownDataset(str(out))
    assert len(ds) == 100 and all(len(r["documents"]) == 3 for r in ds.rows)
    assert all(r["answer"] in " ".join(r["documents"]) for r in ds.rows)
