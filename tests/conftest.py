# Shared test fixtures: the tiny preset (offline, random, CPU), synthetic rows, a fresh output folder, a short finished run.
import json
import os
import shutil
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def tiny_config(**overrides):
    from scaledown import ScaleDownConfig
    values = {"preset": "tiny", "max_steps": 4, "generator_warmup_ratio": 0.0, "eval_steps": 0, "save_steps": 0,
              "batch_size": 8, "micro_batch_size": 4}
    values.update(overrides)
    return ScaleDownConfig.from_dict(values)


@pytest.fixture
def config(tmp_path):
    return tiny_config(output_dir=str(tmp_path / "run"))


@pytest.fixture
def rows():
    from scaledown.data.synthetic import generate_examples
    return generate_examples(32, seed=7)


@pytest.fixture
def model(config):
    from scaledown import ScaleDownModel
    return ScaleDownModel(config)


@pytest.fixture
def subprocess_env():
    """Environment for child processes (CLI, launchers) that import this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """Every family of tests/model_zoo.py saved once per session: name -> local model folder."""
    from tests.model_zoo import build_all
    return build_all(str(tmp_path_factory.mktemp("zoo")))


# a small run on the user's own rows: 6 steps of 4 rows, a checkpoint every 2 steps
RUN = ["--preset", "tiny", "--batch_size", "4", "--max_steps", "6", "--save_steps", "2", "--generator_warmup_ratio",
       "0", "--eval_max_examples", "0", "--logging_steps", "2", "--gradient_checkpointing", "false"]


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    """Two files of rows in the user's format: mine.jsonl (the run's) and other.jsonl."""
    from scaledown.data.synthetic import generate_examples
    root = tmp_path_factory.mktemp("rows")
    mine = root / "mine.jsonl"
    mine.write_text("".join(json.dumps(r) + "\n" for r in generate_examples(32, seed=5)))
    other = root / "other.jsonl"
    other.write_text("".join(json.dumps(r) + "\n" for r in generate_examples(32, seed=6)))
    return mine, other


@pytest.fixture(scope="session")
def finished(tmp_path_factory, data):
    """A finished 6-step run on mine.jsonl (checkpoints 2, 4, 6 and final/)."""
    out = tmp_path_factory.mktemp("finished") / "D"
    from scaledown.cli.train import main as train_main
    assert train_main([*RUN, "--train_data", str(data[0]), "--output_dir", str(out)]) == 0
    return out


def stopped_at_4(finished, tmp_path):
    """A copy of the run as if it had stopped after saving step 4."""
    out = tmp_path / "D"
    shutil.copytree(finished, out)
    shutil.rmtree(out / "checkpoints" / "step_0000006")
    shutil.rmtree(out / "final")
    (out / "train_summary.json").unlink()
    (out / "checkpoints" / "latest").write_text("step_0000004")
    return out
