# scaledown/models under the oldest transformers + peft the neuron extra allows (Neuron 2.28 pins 4.48), in a venv.
"""The Neuron 2.28 stack brings transformers 4.48 (NxD 0.17's training examples pin 4.48.0) while this environment
has transformers 5. A separate venv gets the oldest versions setup.py allows (the neuron extra's transformers bound,
the base peft bound) from the package registry and reuses this interpreter's packages (torch) through a .pth file
placed after its own site-packages, so its transformers/peft/tokenizers/hub shadow the newer ones. The check script
loads a model saved here, trains a step, saves and reloads, and traces the pipeline module as NxD would.

Skips when the registry cannot be reached, unless SCALEDOWN_REQUIRE_NEURON_COMPAT=1 (CI) makes that a failure.
The venv is kept in SCALEDOWN_COMPAT_VENV (default .venv-neuron-compat/ in the checkout) and reused.
"""
import json
import os
import re
import subprocess
import sys
import sysconfig

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.environ.get("SCALEDOWN_COMPAT_VENV", os.path.join(ROOT, ".venv-neuron-compat"))
NETWORK = re.compile(r"ConnectionError|Max retries|Temporary failure|Network is unreachable|NewConnectionError|"
                     r"timed out|No matching distribution found|Could not find a version", re.I)
pytestmark = pytest.mark.slow


def oldest_allowed() -> dict[str, str]:
    """Lower bounds from setup.py: transformers from the neuron extra, peft from install_requires."""
    text = open(os.path.join(ROOT, "setup.py")).read()
    neuron = re.search(r"NEURON = \[(.*?)\]", text, re.S).group(1)
    pins = {"transformers": re.search(r'"transformers>=([\d.]+)', neuron).group(1),
            "peft": re.search(r'"peft>=([\d.]+)"', text).group(1)}
    return {name: version + ".0" * (2 - version.count(".")) for name, version in pins.items()}


def venv_python(pins: dict[str, str]) -> str:
    python = os.path.join(VENV, "bin", "python")
    marker = os.path.join(VENV, "scaledown-pins.json")
    if os.path.exists(marker) and json.load(open(marker)) == pins:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", VENV], check=True, capture_output=True, timeout=300)
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True,
                          capture_output=True, text=True).stdout.strip()
    with open(os.path.join(site, "zz_scaledown_parent.pth"), "w") as f:   # after the venv's own packages
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                              *(f"{name}=={version}" for name, version in pins.items())],
                             capture_output=True, text=True, timeout=900)
    if install.returncode:
        message = (install.stdout + install.stderr).strip().splitlines()[-1:]
        if NETWORK.search(install.stdout + install.stderr) and os.environ.get("SCALEDOWN_REQUIRE_NEURON_COMPAT") != "1":
            pytest.skip(f"cannot install {pins} from the package registry ({' '.join(message)}); "
                        f"set SCALEDOWN_REQUIRE_NEURON_COMPAT=1 to make this a failure")
        pytest.fail(f"pip install {pins} into {VENV} failed:\n{install.stdout[-2000:]}{install.stderr[-2000:]}")
    json.dump(pins, open(marker, "w"))
    return python


def test_models_train_save_load_and_trace_under_the_oldest_transformers(tmp_path):
    from scaledown import ScaleDownConfig, ScaleDownModel
    from scaledown.data.synthetic import generate_examples
    pins = oldest_allowed()
    python = venv_python(pins)
    torch.manual_seed(0)
    model = ScaleDownModel(ScaleDownConfig(preset="tiny"))
    model.eval()
    batch = model.inputs.collate(generate_examples(4, seed=3), mode="memory")
    with torch.no_grad():
        reference = float(model(batch).loss)
    model.save_pretrained(str(tmp_path / "saved"))
    torch.save(dict(batch), tmp_path / "batch.pt")
    proc = subprocess.run([python, os.path.join(ROOT, "tests", "compat", "model_check.py"), str(tmp_path / "saved"),
                           str(tmp_path / "batch.pt"), str(tmp_path / "resaved")], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # the old transformers really ran (no transformers 5 leaking in from this environment)
    assert result["transformers"] == pins["transformers"]
    assert result["transformers_file"].startswith(os.path.realpath(VENV)) or result["transformers_file"].startswith(VENV)
    # a model saved under transformers 5 computes the same loss under 4.48 (attention implementations may differ:
    # eager vs sdpa agree to float rounding)
    assert result["loaded_loss"] == pytest.approx(reference, rel=1e-4)
    assert result["lora_grad"] > 0 and result["memory_grad"] > 0
    assert result["after_reload"] == pytest.approx(result["before_save"], rel=1e-6)
    assert result["traced_loss"] == pytest.approx(result["eager_loss"], rel=1e-5)
