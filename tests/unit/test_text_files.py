# Every reader of text files: JSONL lines end at '\n' only, a UTF-8 BOM is accepted, UTF-16/32 gets a clear error.
import json

import pytest

from scaledown.data.bad_rows import BadRows
from scaledown.errors import ConfigError, DataError, ScaleDownError

# Characters str.splitlines() (and some editors) take for line breaks; inside a JSON string they are text.
SEPARATORS = ["\u2028", "\u2029", "\x85", "\x1c", "\x1d", "\x1e", "\x0b", "\x0c", "\r"]
ROW = {"query": "Where was Dravok born?", "documents": ["Dravok was born in Pelmar."], "answer": "Pelmar"}


def _train_rows(path):
    from scaledown.data.validation import read_rows
    return [row for _, row in read_rows(path)]


def _dataset_rows(path):
    from scaledown.data import ScaleDownDataset
    return ScaleDownDataset(path).rows


def _corpus(path):
    from scaledown.data.corpus import iter_corpus
    return [{"text": d.text} for d in iter_corpus(path, BadRows())]


def _queries(path):
    from scaledown.data.queries import queries_from_file
    return [{"query": q.text} for q in queries_from_file(path, BadRows())]


def _eval_records(path):
    from scaledown.evaluation.qa_datasets import to_rows
    from scaledown.data.validation import read_rows
    return to_rows(read_rows(path), None)


# reader -> (file name, field that holds the text)
JSONL_READERS = {
    "train data": (_train_rows, "d.jsonl", "query"),
    "dataset": (_dataset_rows, "d.jsonl", "query"),
    "corpus": (_corpus, "c.jsonl", "text"),
    "queries": (_queries, "q.jsonl", "query"),
    "eval set": (_eval_records, "e.jsonl", "query"),
}


def _row(field, text):
    return dict(ROW, **{field: text}) if field == "query" else {"id": "1", field: text}


@pytest.mark.parametrize("reader", sorted(JSONL_READERS))
def test_jsonl_lines_end_at_newline_only(tmp_path, reader):
    read, name, field = JSONL_READERS[reader]
    lines = [json.dumps(_row(field, f"Dravok{sep}Pelmar {i}"), ensure_ascii=False) for i, sep in enumerate(SEPARATORS)]
    path = tmp_path / name
    path.write_bytes(("\n".join(lines) + "\r\n").encode("utf-8"))
    # json.dumps escapes control characters; write them raw as an editor or another tool would
    raw = path.read_bytes()
    for sep in SEPARATORS:
        raw = raw.replace(json.dumps(sep)[1:-1].encode(), sep.encode("utf-8"))
    path.write_bytes(raw)
    rows = read(str(path))
    assert len(rows) == len(SEPARATORS)
    texts = [r[field] for r in rows]
    if reader in ("corpus", "queries"):   # these readers normalise whitespace (separators count as space)
        assert all(t.startswith("Dravok") and t.endswith(f"Pelmar {i}") for i, t in enumerate(texts))
    else:
        assert texts == [f"Dravok{sep}Pelmar {i}" for i, sep in enumerate(SEPARATORS)]


@pytest.mark.parametrize("reader", sorted(JSONL_READERS))
def test_utf8_bom_accepted(tmp_path, reader):
    read, name, field = JSONL_READERS[reader]
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(_row(field, "caf\u00e9 one")) + "\n" +
                                        json.dumps(_row(field, "two")) + "\n").encode("utf-8"))
    assert [r[field] for r in read(str(path))] == ["caf\u00e9 one", "two"]


WIDE = {"utf-16": "UTF-16 LE", "utf-16-be": "UTF-16 BE", "utf-16-le": "UTF-16 LE", "utf-32": "UTF-32 LE"}


@pytest.mark.parametrize("reader", sorted(JSONL_READERS))
@pytest.mark.parametrize("encoding", sorted(WIDE))
def test_utf16_and_utf32_refused_naming_file_and_fix(tmp_path, reader, encoding):
    read, name, field = JSONL_READERS[reader]
    path = tmp_path / name
    path.write_bytes((json.dumps(_row(field, "one")) + "\n").encode(encoding))   # 'utf-16': with BOM
    with pytest.raises(ScaleDownError) as info:
        read(str(path))
    message = str(info.value)
    assert str(path) in message and WIDE[encoding] in message and "UTF-8" in message and "iconv" in message


@pytest.mark.parametrize("reader", sorted(JSONL_READERS))
def test_errors_name_file_and_line(tmp_path, reader):
    read, name, field = JSONL_READERS[reader]
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(_row(field, "one")) + "\n\n" + '{"x": \u2028,}\n').encode("utf-8"))
    with pytest.raises(DataError, match=rf"{name} line 3 column \d+: malformed JSON"):
        read(str(path))


def test_json_list_files_accept_bom_and_separators(tmp_path):
    from scaledown.data.records import iter_records
    from scaledown.data.validation import read_rows
    rows = [dict(ROW, query=f"Where{sep}was Dravok born?") for sep in SEPARATORS]
    path = tmp_path / "d.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(rows, ensure_ascii=False, indent=1).encode("utf-8"))
    assert [r["query"] for _, r in read_rows(str(path))] == [r["query"] for r in rows]
    assert [r["query"] for _, r in iter_records(str(path), BadRows())] == [r["query"] for r in rows]
    path.write_bytes(json.dumps(rows).encode("utf-16"))
    for read in (read_rows, lambda p: list(iter_records(p, BadRows()))):
        with pytest.raises(DataError, match="UTF-16 LE, not UTF-8"):
            read(str(path))


def test_tsv_queries_bom_and_separators(tmp_path):
    from scaledown.data.queries import queries_from_ms_marco
    path = tmp_path / "queries.train.tsv"
    path.write_bytes(b"\xef\xbb\xbf" + "1\tWhere\u2028was Dravok born?\r\n2\tWho\x85is Pelmar?\n".encode("utf-8"))
    queries = list(queries_from_ms_marco(str(path), 10, BadRows()))
    assert [(q.id, q.text) for q in queries] == [("1", "Where was Dravok born?"), ("2", "Who is Pelmar?")]
    path.write_bytes("1\tq\n".encode("utf-16-be"))
    with pytest.raises(DataError, match="UTF-16 BE"):
        list(queries_from_ms_marco(str(path), 10, BadRows()))


def test_config_files_bom_and_wide_encodings(tmp_path):
    from scaledown import ScaleDownConfig
    from scaledown.cli.args import build_parser
    from scaledown.training.backends.deepspeed.ds_config import read_ds_config
    from scaledown.training.backends.neuron.profile_file import NeuronProfile
    yml, js = tmp_path / "run.yaml", tmp_path / "run.json"
    yml.write_bytes(b"\xef\xbb\xbfpreset: tiny\nbatch_size: 8\n")
    js.write_bytes(b"\xef\xbb\xbf" + json.dumps({"preset": "tiny", "batch_size": 8}).encode())
    for path in (yml, js):
        assert ScaleDownConfig.from_file(str(path)).batch_size == 8
    ds = tmp_path / "ds.json"
    ds.write_bytes(b"\xef\xbb\xbf" + json.dumps({"zero_optimization": {"stage": 3}}).encode())
    assert read_ds_config(str(ds))[0]["zero_optimization"]["stage"] == 3
    profile = tmp_path / "profile.json"
    profile.write_bytes(b"\xef\xbb\xbf" + json.dumps({"tensor_parallel_size": 8}).encode())
    assert NeuronProfile.from_file(str(profile)).config_values()["tensor_parallel_size"] == 8
    for path, read in ((yml, ScaleDownConfig.from_file), (js, ScaleDownConfig.from_file), (ds, read_ds_config),
                       (profile, NeuronProfile.from_file)):
        text = path.read_bytes()[3:].decode("utf-8")
        path.write_bytes(text.encode("utf-16"))
        with pytest.raises(ConfigError, match=f"{path.name} is encoded as UTF-16 LE, not UTF-8"):
            read(str(path))
    yml.write_text("preset: tiny\nbatch_size: [8\n")
    with pytest.raises(ConfigError, match=r"run.yaml is not valid YAML: line \d+ column \d+"):
        ScaleDownConfig.from_file(str(yml))
    assert build_parser("t", "").parse_args([]).config is None


def test_saved_model_config_with_bom(tmp_path):
    from scaledown.models.serialization import CONFIG_FILE, FORMAT, read_saved_config
    from conftest import tiny_config
    meta = {"format": FORMAT, "config": tiny_config().to_dict()}
    (tmp_path / CONFIG_FILE).write_bytes(b"\xef\xbb\xbf" + json.dumps(meta).encode())
    assert read_saved_config(str(tmp_path))[2].doc_max_length == 32


def test_wide_encoding_sniffing_without_bom():
    from scaledown.text_files import wide_encoding
    assert wide_encoding('{"a": 1}'.encode("utf-16-le")) == "UTF-16 LE"
    assert wide_encoding('{"a": 1}'.encode("utf-16-be")) == "UTF-16 BE"
    assert wide_encoding('{"a": 1}'.encode("utf-32-le")) == "UTF-32 LE"
    assert wide_encoding('{"a": 1}'.encode("utf-32-be")) == "UTF-32 BE"
    assert wide_encoding('{"a": "café"}'.encode("utf-8")) is None
    assert wide_encoding(b"\xef\xbb\xbf{") is None
