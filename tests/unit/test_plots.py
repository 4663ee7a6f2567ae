# `scaledown plot`: training curves from TensorBoard logs, accuracy before/after, systems of an eval, latency.
import json

import pytest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_training_run_plots(tmp_path):
    from scaledown.cli.main import main
    from scaledown.evaluation.tb_logs import read_scalars
    from scaledown.training import tags
    run = tmp_path / "run"
    assert main(["train", "--output_dir", str(run), "--max_steps", "6", "--generator_warmup_ratio", "0.34",
                 "--batch_size", "8", "--micro_batch_size", "4", "--logging_steps", "1", "--eval_steps", "3",
                 "--save_steps", "0", "--num_eval_examples", "4", "--eval_max_examples", "4"]) == 0
    curves = read_scalars(str(run / "runs"))
    assert [step for step, _ in curves[tags.LOSS]] == list(range(1, 7))   # 2 warm-up + 4 compression steps
    assert main(["plot", "--run", str(run), "--output", str(tmp_path / "png")]) == 0
    for name in ("training_curves.png", "accuracy_before_after.png"):
        assert (tmp_path / "png" / name).read_bytes()[:8] == PNG_MAGIC


def test_eval_and_latency_plots(tmp_path):
    from scaledown.cli.main import main
    metrics = {"scaledown": {"em": 0.1, "f1": 0.2, "rouge_l": 0.2, "match": 0.3, "n": 4},
               "uncompressed": {"em": 0.2, "f1": 0.3, "rouge_l": 0.3, "match": 0.4, "n": 4}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    point = {"seconds_per_batch": 1.0, "ms_per_query": 500.0, "queries_per_second": 2.0, "runs": [1.0]}
    report = {"model": {"generator": {"num_hidden_layers": 4}, "generator_parameters": 1e6, "compressor_layers": 1},
              "environment": {"device": "cpu"},
              "results": [{"documents": d, "batch_size": 2, "compressed": point, "uncompressed": point,
                           "speedup": 1.0} for d in (1, 5)]}
    (tmp_path / "latency.json").write_text(json.dumps(report))
    assert main(["plot", "--eval", str(tmp_path), "--latency", str(tmp_path / "latency.json")]) == 0
    assert (tmp_path / "systems.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "latency.png").read_bytes()[:8] == PNG_MAGIC


def test_plot_errors_name_the_fix(tmp_path, capsys):
    from scaledown.cli.main import main
    assert main(["plot", "--run", str(tmp_path)]) == 2
    assert "pass a training run's --output_dir" in capsys.readouterr().err
    (tmp_path / "runs").mkdir()
    assert main(["plot", "--run", str(tmp_path)]) == 2
    assert "no TensorBoard event files" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["plot"])
    assert exit_info.value.code == 2 and "nothing to plot" in capsys.readouterr().err
