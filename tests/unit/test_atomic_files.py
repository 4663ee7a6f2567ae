# scaledown.atomic_files: a reader sees the old file or folder or the new one, never half of one, and no temporary stays.
import json
import os

import pytest

from scaledown import atomic_files


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = str(tmp_path / "metrics.json")
    atomic_files.write_json(path, {"a": 1}, indent=2)
    with pytest.raises(RuntimeError):
        with atomic_files.atomic_open(path) as f:
            f.write('{"a": 2, "half')
            raise RuntimeError("killed mid-write")
    assert json.load(open(path)) == {"a": 1}
    assert os.listdir(tmp_path) == ["metrics.json"]
    atomic_files.write_text(path, "new\n")
    atomic_files.write_bytes(str(tmp_path / "b.bin"), b"\x00\x01")
    assert open(path).read() == "new\n" and open(tmp_path / "b.bin", "rb").read() == b"\x00\x01"
    assert sorted(os.listdir(tmp_path)) == ["b.bin", "metrics.json"]


def test_atomic_path_keeps_the_suffix_a_writer_needs(tmp_path):
    path = str(tmp_path / "curve.png")
    with atomic_files.atomic_path(path, suffix=".png") as tmp:
        assert tmp.endswith(".png") and atomic_files.TMP_MARK in tmp and not os.path.exists(path)
        open(tmp, "wb").write(b"png")
    assert open(path, "rb").read() == b"png" and os.listdir(tmp_path) == ["curve.png"]


def test_a_folder_appears_complete_or_not_at_all(tmp_path):
    final = str(tmp_path / "model")
    with pytest.raises(RuntimeError):
        with atomic_files.atomic_directory(final) as tmp:
            open(os.path.join(tmp, "weights"), "w").write("half")
            raise RuntimeError("killed")
    assert os.listdir(tmp_path) == []
    with atomic_files.atomic_directory(final) as tmp:
        open(os.path.join(tmp, "weights"), "w").write("v1")
    with atomic_files.atomic_directory(final) as tmp:   # an existing folder is replaced whole
        open(os.path.join(tmp, "other"), "w").write("v2")
    assert os.listdir(final) == ["other"] and os.listdir(tmp_path) == ["model"]
