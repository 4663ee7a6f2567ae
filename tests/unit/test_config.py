# ScaleDownConfig: OSCAR defaults, derived compression, presets, files and errors that name the fix.
import json

import pytest

from scaledown import ScaleDownConfig
from scaledown.errors import ConfigError


def test_oscar_defaults():
    c = ScaleDownConfig()
    assert (c.num_memory_tokens, c.compression_rate, c.doc_max_length) == (8, 16, 128)
    assert (c.batch_size, c.learning_rate_generator, c.learning_rate_compressor_nlayers) == (128, 1e-4, 5e-5)
    assert (c.lora_r, c.lora_alpha, c.lora_dropout, c.weight_decay, c.warmup_ratio, c.max_grad_norm) == \
        (16, 32, 0.1, 0.1, 0.05, 1.0)
    assert c.reranking_loss_weight == 0.05 and c.num_documents_train == 5 and c.num_documents_eval == 10


def test_every_field_is_documented():
    import dataclasses
    for f in dataclasses.fields(ScaleDownConfig):
        assert len(f.metadata.get("help", "")) > 15, f"field {f.name} has no help text"


@pytest.mark.parametrize("kwargs,derived", [
    ({"compression_rate": 4}, ("num_memory_tokens", 32)),
    ({"num_memory_tokens": 16}, ("compression_rate", 8)),
    ({"doc_max_length": 256}, ("num_memory_tokens", 16)),
])
def test_compression_is_derived(kwargs, derived):
    assert getattr(ScaleDownConfig(**kwargs), derived[0]) == derived[1]


@pytest.mark.parametrize("kwargs,words", [
    ({"num_memory_tokens": 5, "compression_rate": 16}, ["num_memory_tokens", "doc_max_length"]),
    ({"compressor_type": "modernbrt"}, ["compressor_type", "modernbert"]),
    ({"learning_rate_generator": 0.0}, ["learning_rate_generator", "positive"]),
    ({"learning_rate_compressor_nlayers": float("nan")}, ["learning_rate_compressor_nlayers"]),
    ({"use_bf16": True, "use_fp16": True}, ["use_bf16", "use_fp16"]),
    ({"device_type": "tpu"}, ["device_type", "trainium"]),
    ({"lora_dropout": 1.5}, ["lora_dropout"]),
    ({"batch_size": 0}, ["batch_size"]),
    ({"micro_batch_size": 256}, ["micro_batch_size", "batch_size"]),
    ({"num_compressor_layers": 0}, ["num_compressor_layers"]),
    ({"reranking_loss_weight": -1}, ["reranking_loss_weight"]),
])
def test_invalid_values_name_field_and_fix(kwargs, words):
    with pytest.raises(ConfigError) as info:
        ScaleDownConfig(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_preset_and_explicit_values():
    c = ScaleDownConfig.from_dict({"preset": "tiny", "use_bf16": True})
    assert c.generator_model_name == "scaledown-tiny-mistral"
    assert c.use_bf16 is True  # explicit value wins even though it equals the default
    assert c.preset == "tiny"
    with pytest.raises(ConfigError, match="preset"):
        ScaleDownConfig(preset="huge")


def test_yaml_and_json_files(tmp_path):
    yml = tmp_path / "run.yaml"
    yml.write_text("preset: tiny\nbatch_size: 8\nmax_steps: 3\n")
    c = ScaleDownConfig.from_file(str(yml), max_steps=5)
    assert (c.batch_size, c.max_steps, c.doc_max_length) == (8, 5, 32)
    js = tmp_path / "run.json"
    js.write_text(json.dumps({"batch_sise": 8}))
    with pytest.raises(ConfigError, match="batch_size"):  # the typo gets a suggestion
        ScaleDownConfig.from_file(str(js))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ScaleDownConfig.from_file(str(bad))
    with pytest.raises(ConfigError, match="does not exist"):
        ScaleDownConfig.from_file(str(tmp_path / "missing.yaml"))


def test_round_trip_through_dict(tmp_path):
    c = ScaleDownConfig.from_preset("tiny", enable_reranking=True)
    path = tmp_path / "c.json"
    c.save(str(path))
    again = ScaleDownConfig.from_file(str(path))
    assert again.to_dict() == c.to_dict()


def test_preset_keeps_a_value_passed_equal_to_the_default():
    """A preset fills only the fields the caller did not pass, whatever their value (8 is also the default)."""
    from scaledown import ScaleDownConfig
    assert ScaleDownConfig(preset="tiny", num_compressor_layers=8).num_compressor_layers == 8
    assert ScaleDownConfig(preset="tiny").num_compressor_layers == ScaleDownConfig.from_preset("tiny").num_compressor_layers
    assert ScaleDownConfig.from_preset("tiny", num_compressor_layers=8).num_compressor_layers == 8


def test_a_relative_model_folder_is_recorded_absolute(tmp_path, monkeypatch):
    """Found by a fresh user: `--generator_model_name my/models/qwen3` was saved as that relative path, so the
    final/ folder loaded only from the directory the run started in."""
    from scaledown import ScaleDownConfig
    (tmp_path / "my" / "gen").mkdir(parents=True)
    (tmp_path / "my" / "comp").mkdir()
    monkeypatch.chdir(tmp_path)
    config = ScaleDownConfig(preset="tiny", generator_model_name="my/gen", compressor_type="causal_lm",
                             compressor_model_name="my/comp")
    assert config.generator_model_name == str(tmp_path / "my" / "gen")
    assert config.compressor_model_name == str(tmp_path / "my" / "comp")
    assert ScaleDownConfig(preset="tiny", generator_model_name="org/not-here").generator_model_name == "org/not-here"
