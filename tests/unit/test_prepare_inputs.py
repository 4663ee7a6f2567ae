# Data pipeline inputs: KILT/JSONL corpora, chunking, query sources, bad rows (errors with file and line, or skip).
import json

import pytest

from scaledown.data.bad_rows import BadRows
from scaledown.data.chunking import chunk_documents
from scaledown.data.corpus import iter_corpus
from scaledown.data.prepare_dataset import prepare_main
from scaledown.data.queries import collect_queries, queries_from_file, queries_from_ms_marco
from scaledown.errors import DataError
from scaledown.models.tiny_tokenizer import load_tiny_tokenizer


def write_lines(path, lines):
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines))
    return str(path)


def test_kilt_and_plain_corpus_records(tmp_path):
    path = write_lines(tmp_path / "kilt.jsonl", [
        {"_id": "12", "wikipedia_title": "Paris", "text": ["Paris\n", "Paris is the capital of France.\n",
                                                          "Section::::History.\n", "It is old.\n"]},
        {"id": 7, "title": "Lyon", "text": "Lyon  is a\ncity."},
        {"contents": "No title, pyserini style."},
    ])
    docs = list(iter_corpus(path, BadRows()))
    assert [(d.doc_id, d.title) for d in docs] == [("12", "Paris"), ("7", "Lyon"), ("3", "")]
    assert docs[0].text == "Paris is the capital of France. Section::::History. It is old."  # title paragraph dropped
    assert docs[1].text == "Lyon is a city."
    kilt_named = tmp_path / "kilt_knowledgesource.json"   # KILT's file is JSON lines despite its name
    kilt_named.write_text(open(path).read())
    assert list(iter_corpus(str(kilt_named), BadRows())) == [d.__class__(str(kilt_named) + d.where[len(path):],
                                                                          d.doc_id, d.title, d.text) for d in docs]
    as_list = tmp_path / "list.json"
    as_list.write_text(json.dumps([{"text": "one"}, {"text": "two"}]))
    assert [(d.where, d.text) for d in iter_corpus(str(as_list), BadRows())] == \
        [(f"{as_list} row 1", "one"), (f"{as_list} row 2", "two")]


@pytest.mark.parametrize("line, reason", [
    ('{"id": 1, "text": "ok"', "malformed JSON"),
    ('{"id": 1, "title": "T"}', "no text field"),
    ('{"id": 1, "text": ["", "  "]}', "text is empty"),
    ('{"id": 1, "text": 5}', "must be a string or a list"),
    ('[1, 2]', "expected a JSON object"),
])
def test_bad_corpus_line_names_file_and_line(tmp_path, line, reason):
    path = write_lines(tmp_path / "c.jsonl", [{"text": "fine"}, line, {"text": "also fine"}])
    with pytest.raises(DataError) as err:
        list(iter_corpus(path, BadRows()))
    assert f"{path} line 2" in str(err.value) and reason in str(err.value) and "--skip_bad_rows" in str(err.value)
    bad = BadRows(skip=True)
    assert [d.text for d in iter_corpus(path, bad)] == ["fine", "also fine"]
    assert bad.total == 1 and f"{path} line 2" in bad.summary("corpus rows")


def test_missing_corpus_and_queries_are_clear_errors(tmp_path, capsys):
    queries = write_lines(tmp_path / "q.jsonl", [{"query": "What?"}])
    out = str(tmp_path / "o.json")
    with pytest.raises(DataError, match="--corpus_path .*nope.jsonl: the corpus does not exist"):
        prepare_main(["--queries", queries, "--corpus_path", str(tmp_path / "nope.jsonl"), "--output_file", out])
    with pytest.raises(DataError, match="--corpus_path is needed"):
        prepare_main(["--queries", queries, "--output_file", out])
    with pytest.raises(DataError, match="--queries .*missing.jsonl: the queries file does not exist"):
        prepare_main(["--queries", str(tmp_path / "missing.jsonl"), "--corpus_path", queries, "--output_file", out])


def test_queries_without_text_error_or_skip(tmp_path):
    path = write_lines(tmp_path / "q.jsonl", [{"query": "Who?"}, {"query": "   "}, {"id": 3}, {"query": "Where  is\tit?"}])
    with pytest.raises(DataError, match=r"q.jsonl line 2: field 'query' is empty"):
        list(queries_from_file(path, BadRows()))
    bad = BadRows(skip=True)
    assert [q.text for q in queries_from_file(path, bad)] == ["Who?", "Where is it?"]
    assert bad.counts == {"queries without text": 2}
    with pytest.raises(DataError, match="every query row was bad"):
        collect_queries(write_lines(tmp_path / "empty.jsonl", [{"query": ""}]), False, None, 0, 0, 0, BadRows(True))


def test_ms_marco_from_a_local_copy(tmp_path):
    import datasets
    rows = [{"query_id": i, "query": f"what is thing {i}", "query_type": "DESCRIPTION"} for i in range(6)]
    rows[2]["query"] = ""
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "train.parquet"))
    bad = BadRows(skip=True)
    got = list(queries_from_ms_marco(str(tmp_path / "train.parquet"), limit=4, bad=bad))
    assert [q.text for q in got] == ["what is thing 0", "what is thing 1", "what is thing 3", "what is thing 4"]
    assert [q.id for q in got][:2] == ["0", "1"] and bad.total == 1
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:2])}).save_to_disk(str(saved))
    assert [q.text for q in queries_from_ms_marco(str(saved), 10, BadRows())] == ["what is thing 0", "what is thing 1"]
    (tmp_path / "queries.train.tsv").write_text("121352\tdefine extreme\n634306\twhat does chattel mean\n")
    assert [q.id for q in queries_from_ms_marco(str(tmp_path / "queries.train.tsv"), 10, BadRows())] == \
        ["121352", "634306"]
    with pytest.raises(DataError, match="--ms_marco_path .* does not exist"):
        list(queries_from_ms_marco(str(tmp_path / "absent"), 10, BadRows()))


def test_chunks_respect_token_budget_and_keep_all_text(tmp_path):
    tok = load_tiny_tokenizer()
    words = " ".join(f"word{i} is here." for i in range(120))
    path = write_lines(tmp_path / "c.jsonl", [{"id": "a", "title": "Long Title", "text": words},
                                              {"id": "b", "text": "short one"}])
    passages = list(chunk_documents(iter_corpus(path, BadRows()), tok, chunk_tokens=32))
    long = [p for p in passages if p.doc_id == "a"]
    assert len(long) > 5 and [p.chunk for p in long] == list(range(len(long)))
    assert all(p.document.startswith("Long Title: ") for p in long)
    lengths = [len(tok(p.document, add_special_tokens=False)["input_ids"]) for p in long]
    assert max(lengths) <= 33 and min(lengths[:-1]) >= 20   # near-full chunks, title included (±1 at the join)
    rejoined = " ".join(p.document[len("Long Title: "):] for p in long)
    assert rejoined.split() == words.split()                 # nothing lost or duplicated at the cuts
    assert passages[-1].document == "short one" and passages[-1].doc_id == "b"


def test_synthetic_only_path_writes_json_and_jsonl(tmp_path):
    from scaledown.data import ScaleDownDataset
    for name in ("s.json", "s.jsonl"):
        assert prepare_main(["--num_synthetic_queries", "5", "--output_file", str(tmp_path / name)]) == 0
        assert len(ScaleDownDataset(str(tmp_path / name))) == 5
    assert (tmp_path / "s.jsonl").read_text().count("\n") == 5
    with pytest.raises(DataError, match="use a .json"):
        prepare_main(["--num_synthetic_queries", "5", "--output_file", str(tmp_path / "s.csv")])
