# The one reader of every text file ScaleDown reads (JSONL, JSON, YAML, TSV): UTF-8, BOM accepted, '\n' lines.
"""Every data, corpus, query, config and evaluation file goes through here, so all of them agree on:

- encoding: UTF-8; a leading UTF-8 byte-order mark is skipped; UTF-16 / UTF-32 files (by their BOM,
  or by the NUL bytes ASCII text has in them) are refused with the file name and the way to convert;
- lines: a line ends at '\\n' only (a trailing '\\r' of Windows files is dropped). U+2028, U+2029,
  U+0085, \\x1c-\\x1e, \\x0b and \\x0c inside a JSON string are text, not line breaks (JSON Lines,
  jsonlines.org; `str.splitlines()` would split on them); raw control characters inside JSON strings
  are accepted (json strict=False) rather than failing a whole corpus line;
- streaming: `iter_lines` reads one line at a time (corpora are tens of GB); only whole-document formats
  (a JSON list, YAML, a small JSON settings file) are read at once, by `read_text`;
- errors name the file and the line (and column) and say how to fix it.
"""
from __future__ import annotations

import gzip
import json
from typing import Any, Callable, Iterator, Optional

import yaml

from scaledown.errors import DataError

UTF8_BOM = b"\xef\xbb\xbf"
_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32 LE"), (b"\x00\x00\xfe\xff", "UTF-32 BE"),
         (b"\xff\xfe", "UTF-16 LE"), (b"\xfe\xff", "UTF-16 BE"))
CONVERT_HINT = ("Re-save it as UTF-8 (e.g. `iconv -f {enc} -t UTF-8 IN > OUT`, or your editor's "
                "'Save with encoding: UTF-8').")


def wide_encoding(head: bytes) -> Optional[str]:
    """'UTF-16 LE' / 'UTF-16 BE' / 'UTF-32 LE' / 'UTF-32 BE' when the first bytes of a file say so, else None.

    With a BOM the BOM decides; without one, ASCII text ('{', '[', letters) in UTF-16/32 has NUL bytes
    in fixed places (UTF-8 text never holds a NUL byte outside an escape)."""
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name
    h = head[:4]
    if len(h) == 4 and h[0] and not h[1] and not h[2] and not h[3]:
        return "UTF-32 LE"
    if len(h) == 4 and not h[0] and not h[1] and not h[2] and h[3]:
        return "UTF-32 BE"
    if len(h) >= 2 and h[0] and not h[1]:
        return "UTF-16 LE"
    if len(h) >= 2 and not h[0] and h[1]:
        return "UTF-16 BE"
    return None


def _open_binary(path: str):
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _refuse_wide(path: str, head: bytes, error: type) -> None:
    encoding = wide_encoding(head)
    if encoding:
        raise error(f"{path} is encoded as {encoding}, not UTF-8. " + CONVERT_HINT.format(enc=encoding.split()[0]))


def _utf8_error(path: str, line: int, raw: bytes, exc: UnicodeDecodeError, error: type) -> Exception:
    column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
    return error(f"{path} line {line} column {column}: text is not valid UTF-8 (byte 0x{raw[exc.start]:02x}). "
                 f"Re-save the file as UTF-8.")


def iter_lines(path: str, error: type = DataError,
               on_bad_utf8: Optional[Callable[[str, str], None]] = None) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line, streamed; the '\\n' (and a '\\r' before it) is removed.

    A line that is not UTF-8 raises `error` naming file, line and column, or, when `on_bad_utf8` is
    given, is passed to it as (where, message) and skipped. Blank lines are yielded too (callers skip)."""
    with _open_binary(path) as f:
        _refuse_wide(path, f.read(4), error)
        f.seek(0)
        number = 0
        for raw in f:   # binary iteration splits at b'\n' only
            number += 1
            if number == 1 and raw.startswith(UTF8_BOM):
                raw = raw[len(UTF8_BOM):]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                if on_bad_utf8 is None:
                    raise _utf8_error(path, number, raw, exc, error) from None
                on_bad_utf8(f"{path} line {number}", f"text is not valid UTF-8 (byte {exc.start + 1}); "
                                                      f"re-save the file as UTF-8")
                continue
            if text.endswith("\n"):
                text = text[:-1]
                if text.endswith("\r"):
                    text = text[:-1]
            yield number, text


def read_text(path: str, error: type = DataError) -> str:
    """The whole file as text (for whole-document formats: a JSON list, YAML, a settings file); BOM skipped."""
    with _open_binary(path) as f:
        raw = f.read()
    _refuse_wide(path, raw[:4], error)
    if raw.startswith(UTF8_BOM):
        raw = raw[len(UTF8_BOM):]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _utf8_error(path, raw[:exc.start].count(b"\n") + 1, raw, exc, error) from None


def first_char(path: str, error: type = DataError) -> str:
    """The first non-blank character of a file (after a BOM), reading only as much as needed ('' if empty)."""
    with _open_binary(path) as f:
        head = f.read(4096)
        _refuse_wide(path, head[:4], error)
        if head.startswith(UTF8_BOM):
            head = head[len(UTF8_BOM):]
        while head:
            stripped = head.lstrip()
            if stripped:
                return chr(stripped[0])
            head = f.read(4096)
    return ""


def load_json(path: str, error: type = DataError, what: str = "JSON") -> Any:
    """The JSON value of a whole file; a syntax error names the file, line and column."""
    text = read_text(path, error)
    try:
        return json.loads(text, strict=False)
    except json.JSONDecodeError as exc:
        raise error(f"{path} is not valid {what}: line {exc.lineno} column {exc.colno}: {exc.msg}. "
                    f"Fix the JSON there (a missing comma or quote is the usual cause).") from None


def load_yaml(path: str, error: type = DataError) -> Any:
    """The YAML value of a whole file; a syntax error names the file and line."""
    text = read_text(path, error)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{path} is not valid YAML: {where or 'near the start'}: {problem}. "
                    f"Fix the YAML there (indentation and ':' after each key are the usual causes).") from None


def iter_json_lines(path: str, on_bad: Callable[[str, str, str], None],
                    error: type = DataError) -> Iterator[tuple[str, Any]]:
    """(where, value) of each non-blank line of a JSON Lines file, streamed.

    on_bad(where, reason, detail) gets each malformed or non-UTF-8 line (it raises, or counts and the
    line is skipped); `where` is 'PATH line N'."""
    def bad_utf8(where: str, detail: str) -> None:
        on_bad(where, "non-UTF-8 lines", detail)

    for number, line in iter_lines(path, error, on_bad_utf8=bad_utf8):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            value = json.loads(line, strict=False)   # raw control characters inside strings are text
        except json.JSONDecodeError as exc:
            on_bad(f"{where} column {exc.colno}", "malformed JSON lines",
                   f"malformed JSON ({exc.msg}); each line must be one complete JSON object")
            continue
        yield where, value
