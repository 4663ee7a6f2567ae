# --tp followed through scaledown's calls (benchmarks/trace_flag.py): at most 6 files per path, none visited twice.
"""A regression guard for issue 17: the dry run of a Neuron run and `scaledown convert --to nxd --tp` pass the
tensor-parallel degree through few modules, each once (the plan module holds every tp-dependent computation; the
converter builds its plan once, before reading any tensor). The tracer records calls whose arguments carry the
value (see its docstring), so the figures are the tool's, printed on failure."""
import json
import subprocess
import sys

from tests.conftest import ROOT
from tests.convert_helpers import make_hf_folder

MAX_FILES = 6


def trace(tmp_path, env, value, *command):
    out = tmp_path / "trace.json"
    proc = subprocess.run([sys.executable, "benchmarks/trace_flag.py", "--flag", "tp", "--value", str(value),
                           "--json", str(out), "--", *command], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())["visits"]


def check(visits):
    assert visits, "nothing traced: the tracer lost the flag"
    assert len(set(visits)) <= MAX_FILES and len(visits) == len(set(visits)), " -> ".join(visits)


def test_neuron_dry_run_passes_tp_through_few_modules_once(tmp_path, subprocess_env):
    visits = trace(tmp_path, subprocess_env, 8, "launchers/train_trn1.py", "--neuron_config",
                   "neuron_configs/tp8_pp1.json", "--dry_run")
    check(visits)
    assert visits[-1] == "scaledown/training/backends/neuron/nxd_config.py"   # the NxD config is what uses it


def test_convert_to_nxd_passes_tp_through_few_modules_once(tmp_path, subprocess_env):
    make_hf_folder(tmp_path / "hf")
    visits = trace(tmp_path, subprocess_env, 2, "-m", "scaledown.cli.main", "convert", "--from", "hf", "--to", "nxd",
                   str(tmp_path / "hf"), str(tmp_path / "nxd"), "--tp", "2")
    check(visits)
    assert (tmp_path / "nxd" / "pretrained_weight" / "model").is_dir()
    assert visits[-1] == "scaledown/parallel/plan.py"
