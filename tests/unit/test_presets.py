# Presets are data below the config: one way to apply them, and one place that knows what a tiny sentinel name is.
import ast
import os

from conftest import ROOT
from scaledown.config import ScaleDownConfig
from scaledown.presets import PRESETS, SYNTHETIC_TASK_FIELDS, TINY_GENERATOR

# model-loading code turns a sentinel name into a model; the config answers base_is_random; prep models load them
SENTINEL_READERS = {"scaledown/presets.py", "scaledown/config.py", "scaledown/models/loading.py",
                    "scaledown/models/tiny_models.py", "scaledown/data/prep_models.py"}


def test_only_model_loading_code_asks_whether_a_name_is_a_tiny_sentinel():
    found = []
    for folder, _, files in os.walk(os.path.join(ROOT, "scaledown")):
        for name in files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, ROOT).replace(os.sep, "/")
            if not name.endswith(".py") or rel in SENTINEL_READERS:
                continue
            for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                if isinstance(node, (ast.Name, ast.Attribute)) and \
                        getattr(node, "id", getattr(node, "attr", None)) in ("TINY_MODELS", "is_tiny_model"):
                    found.append(f"{rel}:{node.lineno}")
    assert found == [], f"ask config.base_is_random (or the model) instead: {found}"


def test_base_is_random_follows_the_generator_name():
    assert ScaleDownConfig(preset="tiny").base_is_random
    assert ScaleDownConfig.from_preset("tiny").base_is_random
    assert not ScaleDownConfig(preset="tiny", generator_model_name="some/hub-model").base_is_random


def test_constructor_and_from_dict_apply_a_preset_the_same_way():
    by_init = ScaleDownConfig(preset="tiny", num_compressor_layers=1)
    by_dict = ScaleDownConfig.from_dict({"preset": "tiny", "num_compressor_layers": 1})
    assert by_init.to_dict() == by_dict.to_dict() and by_init.preset_fields == by_dict.preset_fields
    assert by_dict.preset == "tiny" and by_dict.generator_model_name == TINY_GENERATOR
    assert by_dict.preset_fields == frozenset(PRESETS["tiny"]) - {"num_compressor_layers"}
    # on the user's data the synthetic task's schedule and lengths keep their defaults and are not preset fields
    mine = ScaleDownConfig.from_dict({"preset": "tiny"}, user_data=True)
    default = ScaleDownConfig()
    assert all(getattr(mine, k) == getattr(default, k) for k in SYNTHETIC_TASK_FIELDS)
    assert mine.preset_fields == frozenset(PRESETS["tiny"]) - set(SYNTHETIC_TASK_FIELDS)
    assert ScaleDownConfig.from_dict(mine.to_dict()).to_dict() == mine.to_dict()   # a recorded config reloads as is
