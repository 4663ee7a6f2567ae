# Shared test fixtures: the tiny preset (offline, random, CPU), synthetic rows, a fresh output folder.
import os
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
