# The run's config is final once validated: what the built-in curriculum needs is decided before, not patched after.
import json

import yaml


def _args(*argv):
    from scaledown.cli.args import apply_config_run_flags, build_parser
    parser = build_parser("train.py", "")
    return apply_config_run_flags(parser, parser.parse_args(list(argv)))


def test_builtin_curriculum_keeps_its_order_from_the_start(tmp_path):
    from scaledown.cli.training_run import load_datasets, train_config
    args = _args("--output_dir", str(tmp_path / "run"), "--num_train_examples", "8", "--num_eval_examples", "4")
    config = train_config(args)
    assert config.shuffle_data is False   # decided with the other settings, not by load_datasets
    before = config.to_dict()
    load_datasets(config, args)
    assert config.to_dict() == before
    # the flag wins, over a --config file too (as before: only the command line's flag counts)
    assert train_config(_args("--output_dir", str(tmp_path / "a"), "--shuffle_data", "true")).shuffle_data is True
    conf = tmp_path / "run.yaml"
    conf.write_text(yaml.safe_dump({"shuffle_data": True}))
    assert train_config(_args("--output_dir", str(tmp_path / "b"), "--config", str(conf))).shuffle_data is False
    # the user's data is shuffled unless asked otherwise
    data = tmp_path / "mine.jsonl"
    data.write_text(json.dumps({"query": "q?", "documents": ["d."], "answer": "a"}) + "\n")
    assert train_config(_args("--output_dir", str(tmp_path / "c"), "--train_data", str(data))).shuffle_data is True
