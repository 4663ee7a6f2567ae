# Remote code runs only when the user passes the flag on this command or call; a saved trust_remote_code is ignored.
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

CONFIG_CODE = '''
import os
open(os.environ["SCALEDOWN_MARKER"], "w").write("remote code ran")
from transformers import MistralConfig


class MarkerConfig(MistralConfig):
    model_type = "scaledown_marker"
'''
MODEL_CODE = '''
import os
open(os.environ["SCALEDOWN_MARKER"], "w").write("remote code ran")
from transformers import MistralForCausalLM
from .configuration_marker import MarkerConfig


class MarkerForCausalLM(MistralForCausalLM):
    config_class = MarkerConfig
'''


@pytest.fixture(scope="module")
def custom(tmp_path_factory):
    """A generator folder whose config maps to custom code (writing a marker file when executed), and a saved
    ScaleDown model whose scaledown_config.json names it with trust_remote_code: true."""
    from scaledown import ScaleDownModel
    from scaledown.models.tiny_models import tiny_model_config
    from scaledown.presets import TINY_GENERATOR
    from conftest import tiny_config
    root = tmp_path_factory.mktemp("remote")
    generator = root / "custom_generator"
    generator.mkdir()
    values = tiny_model_config(TINY_GENERATOR).to_dict()
    values.update(model_type="scaledown_marker", architectures=["MarkerForCausalLM"],
                  auto_map={"AutoConfig": "configuration_marker.MarkerConfig",
                            "AutoModelForCausalLM": "modeling_marker.MarkerForCausalLM"})
    (generator / "config.json").write_text(json.dumps(values))
    (generator / "configuration_marker.py").write_text(CONFIG_CODE)
    (generator / "modeling_marker.py").write_text(MODEL_CODE)
    model_dir = root / "M"
    ScaleDownModel(tiny_config()).save_pretrained(str(model_dir))
    shutil.rmtree(model_dir / "generator_base")   # the generator is then loaded by its name
    saved = json.loads((model_dir / "scaledown_config.json").read_text())
    saved["config"].update(generator_model_name=str(generator), trust_remote_code=True)
    (model_dir / "scaledown_config.json").write_text(json.dumps(saved))
    return model_dir, generator


@pytest.fixture
def marker(tmp_path, monkeypatch):
    path = tmp_path / "marker"
    monkeypatch.setenv("SCALEDOWN_MARKER", str(path))
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    return path


def test_from_pretrained_ignores_a_saved_trust_remote_code(custom, marker):
    from scaledown import ScaleDownModel
    from scaledown.errors import ScaleDownError
    with pytest.warns(UserWarning, match="trust_remote_code=true; ignored"):
        with pytest.raises(ScaleDownError, match="trust_remote_code"):
            ScaleDownModel.from_pretrained(str(custom[0]))
    assert not marker.exists()
    try:   # asked for on the call: the code runs (what happens after does not matter here)
        ScaleDownModel.from_pretrained(str(custom[0]), trust_remote_code=True)
    except Exception:
        pass
    assert marker.exists()


def run(args, marker, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", SCALEDOWN_MARKER=str(marker),
               HF_MODULES_CACHE=str(tmp_path / "modules"))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("command", [
    ["-m", "scaledown.cli.main", "convert", "--from", "hf", "--to", "nxd", "M", "OUT"],
    ["-m", "scaledown.cli.main", "convert", "--from", "hf", "--to", "hf", "M", "OUT"],
    ["-m", "scaledown.cli.main", "eval", "--model", "M", "--data", "ROWS", "--output", "OUT"],
    ["-m", "scaledown.cli.main", "bench", "latency", "--model", "M", "--output", "OUT", "--documents", "1",
     "--repeats", "1", "--warmup", "0"],
    ["train.py", "--init_from", "M", "--max_steps", "1", "--output_dir", "OUT"],
    # only the compressor is taken: the run's own generator loads, so it trains (and runs no remote code)
    ["train.py", "--init_compressor_from", "M", "--max_steps", "1", "--batch_size", "2", "--num_eval_examples", "2",
     "--eval_max_examples", "0", "--save_steps", "0", "--output_dir", "OUT"],
])
def test_commands_never_run_saved_remote_code_without_the_flag(custom, marker, tmp_path, command):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"query": "q", "documents": ["d"], "answer": "a"}) + "\n")
    names = {"M": str(custom[0]), "OUT": str(tmp_path / "out"), "ROWS": str(rows)}
    proc = run([names.get(a, a) for a in command], marker, tmp_path)
    assert not marker.exists(), proc.stdout[-1000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    if "--init_compressor_from" not in command:   # the saved generator needs its code: refused, with the flag named
        assert proc.returncode == 2 and "--trust_remote_code" in proc.stderr, proc.stderr[-2000:]


def test_convert_runs_remote_code_only_with_its_flag(custom, marker, tmp_path):
    proc = run(["-m", "scaledown.cli.main", "convert", "--from", "hf", "--to", "hf", str(custom[0]),
                str(tmp_path / "out"), "--trust_remote_code"], marker, tmp_path)
    assert marker.exists(), proc.stderr[-2000:]


def test_a_resumed_run_ignores_the_recorded_trust_remote_code(finished, tmp_path):
    from scaledown.training import resume
    out = tmp_path / "D"
    shutil.copytree(finished, out)
    path = out / "checkpoints" / "step_0000006"
    state = json.loads((path / "trainer_state.json").read_text())
    state["config"]["trust_remote_code"] = True
    (path / "trainer_state.json").write_text(json.dumps(state))
    resumed = resume.resume_run(str(path), {"output_dir": str(out)}, {}, allow_changed=False)
    assert resumed.config.trust_remote_code is False
    assert any("trust_remote_code=true; ignored" in note for note in resumed.notes)
    resumed = resume.resume_run(str(path), {"output_dir": str(out), "trust_remote_code": True}, {}, False)
    assert resumed.config.trust_remote_code is True
