# Command lines: train.py end to end, the scaledown command, and user errors without tracebacks.
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT


def cli(args, env, cwd=ROOT, timeout=600):
    return subprocess.run([sys.executable] + args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_train_py_short_run_writes_everything(tmp_path, subprocess_env):
    out = tmp_path / "D"
    proc = cli(["train.py", "--max_steps", "5", "--generator_warmup_ratio", "0.4", "--batch_size", "8",
                "--save_steps", "2", "--num_eval_examples", "16", "--eval_max_examples", "16",
                "--output_dir", str(out)], subprocess_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "held-out accuracy" in proc.stdout
    assert sorted(os.listdir(out / "checkpoints")) == ["latest", "step_0000002", "step_0000004", "step_0000005"]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 5 and "eval/accuracy" in summary["eval_after"]
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(out / "runs"))
    from scaledown import ScaleDownModel
    model = ScaleDownModel.from_pretrained(str(out / "final"))
    assert len(model.answer(["Where was Dravok born?"], [["Dravok was born in Pelmar."]], max_new_tokens=2)) == 1
    # --resume_from auto on a finished run continues from its last checkpoint with more steps
    proc = cli(["train.py", "--max_steps", "6", "--generator_warmup_ratio", "0.34", "--batch_size", "8",
                "--num_eval_examples", "8", "--eval_max_examples", "8", "--resume_from", "auto",
                "--output_dir", str(out)], subprocess_env)
    assert proc.returncode == 2 and "--allow_changed_settings" in proc.stderr   # a resumed run is the same run
    proc = cli(["train.py", "--max_steps", "6", "--generator_warmup_ratio", "0.34", "--batch_size", "8",
                "--num_eval_examples", "8", "--eval_max_examples", "8", "--resume_from", "auto",
                "--output_dir", str(out), "--allow_changed_settings"], subprocess_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resumed from" in proc.stdout + proc.stderr and json.loads((out / "train_summary.json").read_text())["steps"] == 6
    changed = json.loads((out / "checkpoints" / "step_0000006" / "trainer_state.json").read_text())["changed_settings"]
    assert {c["setting"] for c in changed} == {"max_steps", "generator_warmup_ratio", "num_eval_examples"}


@pytest.mark.parametrize("args,message", [
    (["--bogus_flag", "1"], "unrecognized arguments: --bogus_flag"),
    (["--max_step", "3"], "Did you mean --max_steps"),
    (["--compression_rate", "5", "--num_memory_tokens", "8"], "num_memory_tokens"),
    (["--compressor_type", "bert"], "compressor_type"),
    (["--learning_rate_generator", "-1"], "learning_rate_generator"),
    (["--use_bf16", "maybe"], "expected true or false"),
    (["--train_data", "/nonexistent/data.json"], "does not exist"),
    (["--resume_from", "/nonexistent/run"], "no complete checkpoint"),
])
def test_bad_flags_exit_nonzero_without_traceback(args, message, subprocess_env, tmp_path):
    proc = cli(["train.py", "--output_dir", str(tmp_path / "o")] + args, subprocess_env)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 3


def test_malformed_training_file_names_row_and_field(tmp_path, subprocess_env):
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"query": "q", "documents": ["d"], "answer": "a"}) + "\n" +
                    json.dumps({"query": "q", "documents": [], "answer": "a"}) + "\n")
    proc = cli(["train.py", "--train_data", str(data), "--preset", "tiny", "--output_dir", str(tmp_path / "o")],
               subprocess_env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{data} line 2: field 'documents' is an empty list" in proc.stderr


def test_scaledown_command(subprocess_env):
    proc = cli(["-m", "scaledown.cli.main"], subprocess_env)
    assert proc.returncode == 2 and "commands:" in proc.stdout
    proc = cli(["-m", "scaledown.cli.main", "trian"], subprocess_env)
    assert proc.returncode == 2 and "Did you mean 'train'" in proc.stderr
    proc = cli(["-m", "scaledown.cli.main", "train", "--help"], subprocess_env)
    assert proc.returncode == 0 and "--compressor_type" in proc.stdout and "--num_layers" in proc.stdout


@pytest.mark.slow
def test_example_usage_runs_offline(subprocess_env):
    env = dict(subprocess_env, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = cli(["example_usage.py"], env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "reloaded answer:" in proc.stdout and "memory embeddings per query: (1, 2, 4, 128)" in proc.stdout
    last = proc.stdout.strip().splitlines()[-1]   # never a bare "answer: ['']": the output says what it means
    assert "answers from the compressed documents" in last or "an empty answer ('') is what this" in last
