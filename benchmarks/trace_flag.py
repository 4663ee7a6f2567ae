#!/usr/bin/env python
# Follow one flag's value through scaledown's function calls: which files a command passes it through, in order.
"""Runs a Python script or module under sys.setprofile and records every call into scaledown/ (and launchers/) code
that carries the flag: an argument with one of the flag's parameter names (tp, tensor_parallel_size, degree, ..
for --tp), or an argument object (scaledown's, or the parsed flags) holding the flag's attribute (a ScaleDownConfig's tensor_parallel_size, a plan's or
rank grid's .tp), directly or in one of its fields (run.config), that the called function's code reads by that name. Consecutive calls in one file are one visit.

    python benchmarks/trace_flag.py --flag tp --value 8 -- launchers/train_trn1.py --neuron_config neuron_configs/tp8_pp1.json --dry_run
    python benchmarks/trace_flag.py --flag compression_rate --value 8 -- -m scaledown.cli.main train --max_steps 1 ...

Prints the visit sequence (files relative to the repository), then `files N, revisits M`. --json PATH writes
{"visits": [...], "calls": [[file, function], ..]} too. The command's own output goes to stderr, so stdout holds only
the trace. The target: at most 6 files per flag path, none visited twice.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import runpy
import sys
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WATCHED = tuple(os.path.join(ROOT, d) + os.sep for d in ("scaledown", "launchers"))

FLAGS = {
    # flag -> (parameter names carrying the value, attributes of an argument object carrying it)
    "tp": ({"tp", "tp_size", "tensor_parallel", "tensor_parallel_size", "degree"}, {"tensor_parallel_size", "tp"}),
    "compression_rate": ({"compression_rate", "rate"}, {"compression_rate"}),
    # what config.py resolves --compression_rate into (doc_max_length // compression_rate)
    "num_memory_tokens": ({"num_memory_tokens", "memory_tokens"}, {"num_memory_tokens", "memory_tokens"}),
}


class FlagTrace:
    def __init__(self, flag: str, value=None):
        self.params, self.attrs = FLAGS[flag]
        self.value = value          # only arguments holding this value count (None: any)
        self.calls: list[tuple[str, str]] = []

    def carries(self, frame) -> bool:
        code = frame.f_code
        names = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
        read = set(code.co_names) & self.attrs
        for name in names:
            value = frame.f_locals.get(name)
            if value is None:
                continue
            if name in self.params and self.matches(value):
                return True
            if read and any(self.matches(_get(value, a)) or self.matches(_held(value, a)) for a in read):
                return True
        return False

    def matches(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return self.value is None or value == self.value

    def profile(self, frame, event, arg):
        if event != "call" or not frame.f_code.co_filename.startswith(WATCHED):
            return
        if self.carries(frame):
            self.calls.append((os.path.relpath(frame.f_code.co_filename, ROOT), frame.f_code.co_qualname))

    def visits(self) -> list[str]:
        out: list[str] = []
        for path, _ in self.calls:
            if not out or out[-1] != path:
                out.append(path)
        return out


def _ours(value) -> bool:
    """Objects of scaledown, and the flag parser's namespace."""
    return type(value).__module__.startswith("scaledown") or isinstance(value, argparse.Namespace)


def _get(value, attr: str):
    try:
        return getattr(value, attr, None) if _ours(value) else None
    except Exception:   # noqa: BLE001 - a half-built object
        return None


def _held(value, attr: str):
    """One level down: an argument (a run's settings) whose field holds the object with `attr` (run.config)."""
    if not _ours(value):
        return None
    try:
        fields = vars(value)
    except TypeError:
        return None
    for field in fields.values():
        found = _get(field, attr) if field is not value else None
        if found is not None:
            return found
    return None


def run(flag: str, argv: list[str], value=None) -> FlagTrace:
    """Run `argv` (a script path, or -m module, then its arguments) in this process with the flag traced; `value`:
    count only arguments holding the flag's value (what the command passes), not other configs' defaults."""
    trace = FlagTrace(flag, value)
    module = argv[1] if argv[0] == "-m" else None
    rest = argv[2:] if module else argv[1:]
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [module or argv[0], *rest]
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    threading.setprofile(trace.profile)
    sys.setprofile(trace.profile)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            try:
                if module:
                    runpy.run_module(module, run_name="__main__", alter_sys=True)
                else:
                    runpy.run_path(argv[0], run_name="__main__")
            except SystemExit as exit_:
                if exit_.code not in (0, None):
                    raise
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
        sys.argv, sys.path[:] = saved_argv, saved_path
    return trace


def revisits(visits: list[str]) -> int:
    return len(visits) - len(set(visits))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flag", choices=sorted(FLAGS), default="tp")
    parser.add_argument("--value", type=float, help="the flag's value in the command: only arguments holding it count "
                        "(a checkpoint's own config, with tp 1, is not the --tp 2 being followed)")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--calls", action="store_true", help="also print every recorded call (file: function)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    trace = run(args.flag, command, args.value)
    visits = trace.visits()
    if args.calls:
        for path, function in trace.calls:
            print(f"  {path}: {function}")
    print(" -> ".join(visits))
    print(f"files {len(set(visits))}, revisits {revisits(visits)}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"visits": visits, "calls": trace.calls}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
