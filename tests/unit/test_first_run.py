# What a newcomer meets first: --config holding run flags, the default run folder, eval's warnings, plot after a
# resume, bench/convert misuse, progress bars in log files, and a hub that cannot be reached.
import json
import logging
import os
import time

import pytest

from conftest import tiny_config
from scaledown.errors import CheckpointError, ConfigError

ROW = {"query": "Where was Dravok born?", "documents": ["Dravok was born in Pelmar."], "answer": "Pelmar"}


def _parse(*argv):
    from scaledown.cli.args import build_parser
    return build_parser("train.py", "").parse_args(list(argv))


def _data(tmp_path, name="mine.jsonl"):
    path = tmp_path / name
    path.write_text(json.dumps(ROW) + "\n")
    return str(path)


def test_config_file_holds_run_flags_too(tmp_path):
    from scaledown.cli.train import train_config
    data = _data(tmp_path)
    yml = tmp_path / "run.yaml"
    yml.write_text(f"preset: tiny\ntrain_data: {data}\neval_data: {data}\nno_progress: true\n"
                   f"output_dir: {tmp_path / 'out'}\nbatch_size: 8\n")
    args = _parse("--config", str(yml))
    assert (args.train_data, args.eval_data, args.no_progress) == (data, data, True)
    config = train_config(args)
    assert config.output_dir == str(tmp_path / "out") and config.batch_size == 8
    assert config.max_steps == -1                      # user data: the preset's synthetic schedule stays out
    other = _data(tmp_path, "other.jsonl")
    assert _parse("--config", str(yml), "--train_data", other).train_data == other   # the command line wins
    yml.write_text("no_progress: maybe\n")
    with pytest.raises(ConfigError, match="no_progress"):
        _parse("--config", str(yml))


def test_default_output_dir_is_outputs_run_name(tmp_path):
    from scaledown.cli.train import train_config
    assert train_config(_parse("--train_data", _data(tmp_path))).output_dir == os.path.join("outputs", "mine")
    assert train_config(_parse()).output_dir == os.path.join("outputs", "tiny-synthetic")
    assert train_config(_parse("--stage", "pretrain")).output_dir == os.path.join("outputs", "pretrain-tiny-synthetic")
    assert train_config(_parse("--output_dir", str(tmp_path))).output_dir == str(tmp_path)


def test_eval_truncation_warning_names_the_file_and_a_real_fix(tmp_path, caplog):
    from scaledown.cli.evaluate import _prepare_rows
    from scaledown.models import loading
    config = tiny_config()
    tok = loading.load_tokenizer(config.generator_model_name)
    rows = [{"query": "q", "documents": [" ".join(["Dravok was born in Pelmar."] * 20)], "answers": ["Pelmar"]}]
    with caplog.at_level(logging.WARNING):
        _prepare_rows(rows, config, tok, "dev.jsonl", 3)
    message = next(r.getMessage() for r in caplog.records if "doc_max_length" in r.getMessage())
    assert message.startswith("dev.jsonl:") and "--long_documents" not in message.split("retrain with")[0]
    assert "saved config has long_documents='truncate'" in message


def test_plot_after_a_resumed_run_plots_the_whole_run(tmp_path, capsys):
    from torch.utils.tensorboard import SummaryWriter
    from scaledown.cli.plot import plot_main
    from scaledown.training import tags
    first, second = SummaryWriter(str(tmp_path / "runs")), SummaryWriter(str(tmp_path / "runs"))
    for step in range(0, 6):
        first.add_scalar(tags.LOSS, 3.0 - 0.1 * step, step)
    first.add_scalar(tags.EVAL_ACCURACY, 0.05, 0)
    first.close()
    for step in range(6, 12):   # the resumed part: another event file
        second.add_scalar(tags.LOSS, 3.0 - 0.1 * step, step)
    second.add_scalar(tags.EVAL_ACCURACY, 0.8, 11)
    second.close()
    (tmp_path / "train_summary.json").write_text(json.dumps({"steps": 11, "eval_before": {},
                                                             "eval_after": {tags.EVAL_ACCURACY: 0.8}}))
    assert plot_main(["--run", str(tmp_path)]) == 0
    assert (tmp_path / "training_curves.png").is_file() and (tmp_path / "accuracy_before_after.png").is_file()
    from scaledown.evaluation.plots import run_before_after
    from scaledown.evaluation.tb_logs import read_scalars
    summary = run_before_after(json.loads((tmp_path / "train_summary.json").read_text()),
                               read_scalars(str(tmp_path / "runs")))
    assert summary["eval_before"] == {tags.EVAL_ACCURACY: pytest.approx(0.05)}
    assert [s for s, _ in read_scalars(str(tmp_path / "runs"))[tags.LOSS]] == list(range(12))


def test_bench_flops_zero_documents_is_a_clear_error(capsys):
    from scaledown.cli.main import main
    assert main(["bench", "flops", "--num_documents", "0"]) == 2
    assert "--num_documents 0: use at least 1" in capsys.readouterr().err


def test_convert_names_a_one_process_checkpoint(tmp_path):
    from scaledown.checkpoint import convert
    step = tmp_path / "checkpoints" / "step_0000004"
    step.mkdir(parents=True)
    (step / "model.safetensors").write_bytes(b"")
    (step / "client_state.pt").write_bytes(b"")
    for src in (step, tmp_path / "checkpoints"):
        with pytest.raises(CheckpointError, match="one-process .* OUTPUT_DIR/final"):
            convert("hf", "nxd", str(src), str(tmp_path / "out"))


def test_progress_bars_off_without_a_terminal(tmp_path, monkeypatch):
    from scaledown.training.run_logger import RunLogger
    assert _parse("--no_progress").no_progress
    log = RunLogger(str(tmp_path), True, 10, 0, progress=True)   # pytest's captured stderr is not a TTY
    assert log.bar is None
    log.close()


def test_unreachable_hub_fails_in_seconds(tmp_path, monkeypatch):
    from scaledown.models import hub_access, loading
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")    # nothing listens on the discard port
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))           # an empty cache
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hub_access, "_reachable", {})
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="Mistral-7B-Instruct-v0.2.*cannot be reached.*--preset tiny"):
        loading.load_tokenizer("mistralai/Mistral-7B-Instruct-v0.2")
    assert time.perf_counter() - start < 2 * hub_access.PROBE_TIMEOUT_S
