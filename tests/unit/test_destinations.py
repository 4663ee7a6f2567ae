# Commands that write a folder or file refuse to replace an existing one unless told (--overwrite).
import json
import os

import pytest

from scaledown.cli.main import main
from tests.convert_helpers import make_hf_folder


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "final"
    make_hf_folder(folder)
    return folder


def listing(folder):
    return sorted((os.path.relpath(os.path.join(r, f), folder), os.path.getmtime(os.path.join(r, f)))
                  for r, _, files in os.walk(folder) for f in files)


@pytest.mark.parametrize("fmt", ["hf", "nxd", "deepspeed"])
def test_convert_refuses_an_existing_destination(hf, tmp_path, fmt, capsys):
    dst = tmp_path / "dst"
    assert main(["convert", "--from", "hf", "--to", fmt, str(hf), str(dst)]) == 0
    before = listing(dst)
    capsys.readouterr()
    assert main(["convert", "--from", "hf", "--to", fmt, str(hf), str(dst)]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert "already exists" in err and "--overwrite" in err and "Traceback" not in err
    assert err.count(str(dst)) == 1   # the folder is named once (it read "the tag X already holds X")
    assert listing(dst) == before   # nothing rewritten
    assert main(["convert", "--from", "hf", "--to", fmt, str(hf), str(dst), "--overwrite"]) == 0
    assert listing(dst) != before


def test_convert_into_a_non_empty_folder_of_other_files_is_refused(hf, tmp_path, capsys):
    dst = tmp_path / "mine"
    dst.mkdir()
    (dst / "notes.txt").write_text("keep me")
    assert main(["convert", "--from", "hf", "--to", "hf", str(hf), str(dst)]) == 2
    assert (dst / "notes.txt").read_text() == "keep me" and os.listdir(dst) == ["notes.txt"]


def test_plot_bench_and_prepare_refuse_to_replace_files(tmp_path, capsys):
    metrics = {"scaledown": {"em": 0.1, "f1": 0.2, "rouge_l": 0.2, "match": 0.3, "n": 4}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    assert main(["plot", "--eval", str(tmp_path)]) == 0
    png = (tmp_path / "systems.png").read_bytes()
    assert main(["plot", "--eval", str(tmp_path)]) == 2 and "--overwrite" in capsys.readouterr().err
    assert main(["plot", "--eval", str(tmp_path), "--overwrite"]) == 0
    rows = tmp_path / "rows.json"
    rows.write_text("[]")
    assert main(["prepare-data", "--num_synthetic_queries", "4", "--output_file", str(rows)]) == 2
    assert rows.read_text() == "[]" and "--overwrite" in capsys.readouterr().err
    assert main(["prepare-data", "--num_synthetic_queries", "4", "--output_file", str(rows), "--overwrite"]) == 0
    assert len(json.loads(rows.read_text())) == 4
    figures = tmp_path / "flops.json"
    figures.write_text("{}")
    assert main(["bench", "flops", "--json", str(figures)]) == 2 and figures.read_text() == "{}"
    latency = tmp_path / "bench"
    latency.mkdir()
    (latency / "latency.json").write_text("{}")
    assert main(["bench", "latency", "--output", str(latency)]) == 2
    assert (latency / "latency.json").read_text() == "{}" and png
