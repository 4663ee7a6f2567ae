# A user's run is the user's: the tiny preset's synthetic schedule and lengths stay out, quoted booleans are refused,
# truncations are counted, reranking without scores is switched off (preset) or refused (user).
import json
import logging

import pytest

from conftest import tiny_config
from scaledown import ScaleDownConfig
from scaledown.errors import ConfigError, DataError

ROW = {"query": "Where was Dravok born?", "documents": ["Dravok was born in Pelmar."], "answer": "Pelmar"}


def _args(*argv):
    from scaledown.cli.args import build_parser
    return build_parser("train.py", "").parse_args(list(argv))


def _data(tmp_path, rows=(ROW,), name="mine.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_preset_schedule_and_synthetic_lengths_stay_out_of_user_runs(tmp_path):
    from scaledown.cli.train import train_config
    config = train_config(_args("--preset", "tiny", "--train_data", _data(tmp_path), "--num_epochs", "1"))
    defaults = ScaleDownConfig(generator_model_name="x")
    for name in ("max_steps", "answer_max_length", "query_max_length", "max_new_tokens"):
        assert getattr(config, name) == getattr(defaults, name), name
    assert config.doc_max_length == 32 and config.num_epochs == 1   # the tiny model itself stays tiny
    synthetic = train_config(_args("--preset", "tiny"))
    assert (synthetic.max_steps, synthetic.answer_max_length) == (1600, 8)
    flagged = train_config(_args("--preset", "tiny", "--train_data", _data(tmp_path), "--max_steps", "7"))
    assert flagged.max_steps == 7


def test_reranking_without_scores_off_with_note_when_only_the_preset_asked(tmp_path, caplog):
    from scaledown.cli.train import load_datasets, train_config
    args = _args("--preset", "tiny", "--train_data", _data(tmp_path))
    with caplog.at_level(logging.WARNING):
        config = train_config(args)   # decided with the other settings: the validated config is never patched
    assert not config.enable_reranking and "enable_reranking" not in config.preset_fields
    assert any("no row has reranking_scores" in r.getMessage() for r in caplog.records)
    before = config.to_dict()
    load_datasets(config, args)
    assert config.to_dict() == before
    for flag in (["--enable_reranking"], ["--enable_reranking", "true"]):
        args = _args("--preset", "tiny", "--train_data", _data(tmp_path), *flag)
        with pytest.raises(DataError, match="enable_reranking is on but no row of .*mine.jsonl.*reranking_scores"):
            load_datasets(train_config(args), args)
    scored = _data(tmp_path, [dict(ROW, reranking_scores=[1.0])], "scored.jsonl")
    args = _args("--preset", "tiny", "--train_data", scored)
    config = train_config(args)
    load_datasets(config, args)
    assert config.enable_reranking


def test_answer_and_query_truncations_are_counted(caplog):
    from scaledown.data import ScaleDownDataset
    config = tiny_config(answer_max_length=8, query_max_length=24)   # what the synthetic task needs
    rows = [dict(ROW, answer="Pelmar, the old town by the sea " * 3, query="Where was Dravok born? " * 6), ROW]
    with caplog.at_level(logging.WARNING):
        ds = ScaleDownDataset(rows, config)
    assert ds.num_answers_truncated == 1 and ds.num_queries_truncated == 1
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "1 of 2 answers are longer than answer_max_length=8" in messages
    assert "1 of 2 queries are longer than query_max_length=24" in messages


@pytest.mark.parametrize("value", ["false", "maybe", "true", "False"])
def test_quoted_booleans_are_errors_from_every_source(tmp_path, value):
    yml = tmp_path / "run.yaml"
    yml.write_text(f'preset: tiny\nenable_reranking: "{value}"\n')
    with pytest.raises(ConfigError, match="enable_reranking=.* is a string, not a boolean.*without quotes"):
        ScaleDownConfig.from_file(str(yml))
    with pytest.raises(ConfigError, match="enable_reranking"):
        ScaleDownConfig(preset="tiny", enable_reranking=value)
    js = tmp_path / "run.json"
    js.write_text(json.dumps({"preset": "tiny", "use_bf16": value}))
    with pytest.raises(ConfigError, match="use_bf16"):
        ScaleDownConfig.from_file(str(js))


def test_unquoted_booleans_flags_and_saved_configs(tmp_path):
    from scaledown.cli.args import config_from_args
    from scaledown.models.serialization import CONFIG_FILE, FORMAT, read_saved_config
    yml = tmp_path / "run.yaml"
    yml.write_text("preset: tiny\nenable_reranking: false\nlearning_rate_generator: 1e-4\n")
    config = ScaleDownConfig.from_file(str(yml))
    assert config.enable_reranking is False and config.learning_rate_generator == 1e-4   # YAML 1.1 reads 1e-4 as text
    assert config_from_args(_args("--enable_reranking", "false", "--preset", "tiny")).enable_reranking is False
    saved = tiny_config().to_dict()
    saved["memory_norm"] = "false"
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"format": FORMAT, "config": saved}))
    with pytest.raises(ConfigError, match="memory_norm='false' is a string"):
        read_saved_config(str(tmp_path))


@pytest.mark.parametrize("field,value,words", [
    ("batch_size", "8", "must be an integer"), ("batch_size", 8.0, "must be an integer"),
    ("max_steps", True, "must be an integer"), ("learning_rate_generator", "fast", "must be a number"),
    ("compressor_type", 3, "must be a string"), ("system_prompt", 5, "must be a string"),
    ("num_microbatches", "2", "must be an integer")])
def test_every_field_type_checked(field, value, words):
    with pytest.raises(ConfigError, match=f"{field}=.*{words}"):
        ScaleDownConfig(preset="tiny", **{field: value})


def test_preset_warning_names_only_the_values_the_user_left_unset(tmp_path, caplog):
    """`--preset tiny --train_data F --max_steps 6`: the warning about the synthetic task's fields that keep their
    defaults does not list max_steps, which the user set."""
    from scaledown.cli.train import train_config
    with caplog.at_level(logging.WARNING, logger="scaledown.cli.train"):
        train_config(_args("--preset", "tiny", "--train_data", _data(tmp_path), "--max_steps", "6",
                           "--output_dir", str(tmp_path / "out")))
    text = " ".join(r.getMessage() for r in caplog.records if "keep their defaults" in r.getMessage())
    assert "answer_max_length=" in text and "max_steps" not in text, text


def test_init_from_a_trained_n_layers_model_gets_no_warmup_that_would_discard_its_compressor(tmp_path, capsys, caplog):
    """The tiny preset's generator warm-up ends by recopying the generator's layers into the N-layers compressor:
    after --init_from a trained model that silently threw its compressor away (or crashed when the released folder's
    added rows differ). Now the preset's warm-up is dropped with a note, and an explicit one is refused."""
    from scaledown.cli.train import main
    flags = ["--preset", "tiny", "--batch_size", "4", "--eval_max_examples", "0", "--gradient_checkpointing", "false"]
    assert main([*flags, "--max_steps", "1", "--generator_warmup_ratio", "0", "--output_dir", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    assert main([*flags, "--max_steps", "2", "--init_from", str(tmp_path / "a" / "final"),
                 "--output_dir", str(tmp_path / "b")]) == 0
    assert "training 2 steps (finetune 2)" in capsys.readouterr().out
    assert "no generator warm-up" in caplog.text
    assert main([*flags, "--max_steps", "2", "--init_from", str(tmp_path / "a" / "final"),
                 "--generator_warmup_ratio", "0.5", "--output_dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "would discard the trained compressor" in err and "--generator_warmup_ratio 0" in err
    assert "Traceback" not in err and not (tmp_path / "c").exists()
