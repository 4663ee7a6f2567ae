# A mistyped flag is named before torch loads, by every command and every script the README prints (issue 17, item 6).
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from scaledown.cli.main import SUBCOMMANDS

# runs the entry point with a flag that does not exist, then says which heavy packages had loaded when it exited
PROBE = """import runpy, sys
sys.argv = [sys.argv[1], *sys.argv[2:]]
try:
    runpy.run_path(sys.argv[0], run_name="__main__") if sys.argv[0].endswith(".py") else runpy.run_module(
        sys.argv[0], run_name="__main__", alter_sys=True)
except SystemExit as exc:
    print("EXIT", exc.code)
print("LOADED", sorted(name for name in ("torch", "transformers", "peft") if name in sys.modules))
"""

ENTRY_POINTS = ([["scaledown.cli.main", command] for command in SUBCOMMANDS]
                + [["train.py"], ["launchers/train_gpu.py"], ["launchers/train_trn1.py"],
                   ["scaledown.data.prepare_dataset"], ["scaledown.data.synthetic_corpus"]])


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=lambda entry: " ".join(entry))
def test_a_mistyped_flag_is_named_before_torch_loads(entry):
    result = subprocess.run([sys.executable, "-c", PROBE, *entry, "--no_such_flag", "1"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
    assert "EXIT 2" in result.stdout, result.stdout + result.stderr
    assert "--no_such_flag" in result.stderr   # named even where a required flag is missing too
    assert "LOADED []" in result.stdout, result.stdout
