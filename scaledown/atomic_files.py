# Writing a file or a folder so that a reader sees the old one or the new one, never half of it.
"""The one place ScaleDown renames a finished temporary into place (the only `os.replace` / `os.rename` of the
package; tests/unit/test_atomic_files.py keeps it that way). Temporaries are siblings of their target, named
`<name>.tmp-<pid>` (files) or `.<name>.tmp-<random>` (folders), so a killed writer leaves something
recognisable (every `.tmp-` name is a leftover) and never a half-written file under the real name.

POSIX rename within one file system is atomic (rename(2)); files are fsync'ed before the rename so a power
cut cannot leave an empty file under the new name.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import IO, Any, Iterator

TMP_MARK = ".tmp-"   # every temporary name carries it


def temporary_name(path: str, suffix: str = "") -> str:
    """`path.tmp-<pid><suffix>`: a sibling of `path` (same file system), unique per process."""
    return f"{path}{TMP_MARK}{os.getpid()}{suffix}"


def _fsync_file(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextmanager
def atomic_path(path: str, suffix: str = "", fsync: bool = True) -> Iterator[str]:
    """Yield a temporary path to write `path` through (a library writes it by name); on success it replaces
    `path`, on any error it is removed and `path` is untouched. `suffix` keeps an extension a writer reads
    (matplotlib picks the format from it)."""
    tmp = temporary_name(path, suffix)
    try:
        yield tmp
        if fsync:
            _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


@contextmanager
def atomic_open(path: str, mode: str = "w", encoding: str | None = "utf-8", fsync: bool = True) -> Iterator[IO]:
    """open(path, mode) through a temporary file that replaces `path` when the block ends without error."""
    binary = "b" in mode
    with atomic_path(path, fsync=False) as tmp:
        with open(tmp, mode, encoding=None if binary else encoding) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())


def write_text(path: str, text: str, encoding: str = "utf-8", fsync: bool = True) -> None:
    with atomic_open(path, "w", encoding=encoding, fsync=fsync) as f:
        f.write(text)


def write_bytes(path: str, data: bytes, fsync: bool = True) -> None:
    with atomic_open(path, "wb", fsync=fsync) as f:
        f.write(data)


def write_json(path: str, value: Any, fsync: bool = True, **dump_options: Any) -> None:
    """json.dump(value, ..., **dump_options) into `path`, atomically."""
    with atomic_open(path, "w", fsync=fsync) as f:
        json.dump(value, f, **dump_options)


# ---- folders -----------------------------------------------------------------------------------------------------
def staging_directory(final_path: str) -> str:
    """A new, empty temporary sibling folder of `final_path` (`.<name>.tmp-<random>`); move it into place
    with commit_directory."""
    parent = os.path.dirname(os.path.abspath(final_path)) or "."
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.normpath(final_path))}{TMP_MARK}", dir=parent)


def commit_directory(tmp: str, final_path: str) -> None:
    """Move the finished folder `tmp` to `final_path`. An existing `final_path` is first moved aside and removed
    after, so a reader finds the old folder or the new one under that name, never a mix."""
    if os.path.lexists(final_path):
        old = tmp + ".old"
        os.rename(final_path, old)
        os.rename(tmp, final_path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final_path)


@contextmanager
def atomic_directory(final_path: str) -> Iterator[str]:
    """Yield a staging folder; it becomes `final_path` when the block ends without error, else it is removed."""
    tmp = staging_directory(final_path)
    try:
        yield tmp
        commit_directory(tmp, final_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
