# Stage pretrain on the distributed backends: 2-rank ZeRO-3 (real DeepSpeed) and NxD (test double) match one process.
import os
import subprocess
import sys

import pytest

from deepspeed_runs import ROOT, log_tail, require_deepspeed, run, tb_scalars

pytestmark = pytest.mark.slow

# 2 warm-up steps (chunks read as text), then 2 compressor pretraining steps; eval at the phase switch and the end
FLAGS = ["--stage", "pretrain", "--compressor_type", "modernbert", "--max_steps", "4", "--generator_warmup_ratio",
         "0.5", "--batch_size", "8", "--micro_batch_size", "4", "--logging_steps", "1", "--save_steps", "2",
         "--eval_steps", "2", "--num_train_examples", "64", "--seed", "5", "--use_bf16", "false",
         "--gradient_checkpointing", "false"]
TAGS = ("train/loss", "eval/loss", "eval/reconstruction_accuracy")


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_PORT="29571")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("pretrain") / "one_process")
    proc = subprocess.run([sys.executable, "train.py", *FLAGS, "--output_dir", out], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "held-out reconstruction accuracy" in proc.stdout
    return out


def assert_same_run(ours: str, reference: str, tags=TAGS, rel=1e-4) -> None:
    for tag in tags:
        mine, theirs = tb_scalars(ours, tag), tb_scalars(reference, tag)
        assert theirs and sorted(mine) == sorted(theirs), (tag, mine, theirs)
        for step in theirs:
            assert mine[step] == pytest.approx(theirs[step], rel=rel, abs=1e-6), (tag, step, mine, theirs)


def test_zero3_two_ranks_pretrain_like_one_process(one_process, tmp_path):
    require_deepspeed()
    out = str(tmp_path / "zero3")
    log = str(tmp_path / "zero3.log")
    proc = run("deepspeed", 2, [*FLAGS, "--output_dir", out], _env(), log)
    assert proc.returncode == 0, log_tail(log)
    assert_same_run(out, one_process)
    # the exported model is the fine-tuning stage's starting point, with the pretrained compressor
    assert os.path.isfile(os.path.join(out, "final", "compressor", "model.safetensors"))


@pytest.mark.nxd_double
def test_nxd_pretrain_like_one_process(one_process, tmp_path):
    """The NxD defaults a user gets (ZeRO-1, NxD's reentrant activation checkpointing) in fp32, against the
    one-process run without recomputation (recomputing is exact): bf16 is checked by tests/test_neuron_training.py,
    not at rtol 1e-5."""
    out = str(tmp_path / "nxd")
    runner = os.path.join(ROOT, "tests", "nxd_double", "run.py")
    from test_neuron_training import free_port
    proc = subprocess.run([sys.executable, runner, *FLAGS, "--zero1", "true", "--gradient_checkpointing", "true",
                           "--output_dir", out], cwd=ROOT, env=dict(_env(), MASTER_PORT=free_port()),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert_same_run(out, one_process, rel=1e-5)
