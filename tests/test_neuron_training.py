# NxD backend end to end through launchers/train_trn1.py on the NxD TEST DOUBLE: parity, resume, torchrun TP=2, convert.
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNER = os.path.join(ROOT, "tests", "nxd_double", "run.py")
FLAGS = ["--max_steps", "4", "--batch_size", "8", "--micro_batch_size", "4", "--logging_steps", "1", "--save_steps", "2",
         "--eval_steps", "0", "--use_bf16", "false", "--gradient_checkpointing", "false", "--num_train_examples", "64",
         "--num_eval_examples", "8", "--eval_max_examples", "4", "--max_new_tokens", "4", "--seed", "5",
         "--generator_warmup_ratio", "0"]
pytestmark = pytest.mark.nxd_double


def run(argv, env, timeout=600):
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def losses(run_dir):
    from scaledown.training.compare_runs import read_scalars
    return read_scalars(run_dir)["train/loss"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, subprocess_env_module):
    """One NxD (tp 1, double) run and the same run on the one-process backend."""
    base = tmp_path_factory.mktemp("nxd")
    env = subprocess_env_module
    run([sys.executable, RUNNER, *FLAGS, "--zero1", "false", "--output_dir", str(base / "neuron")], env)
    run([sys.executable, "train.py", *FLAGS, "--output_dir", str(base / "local")], env)
    return base


@pytest.fixture(scope="module")
def subprocess_env_module():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
               MASTER_PORT="29561")
    return env


def test_neuron_run_matches_the_one_process_backend(runs):
    proc = subprocess.run([sys.executable, "-m", "scaledown.cli.main", "compare-runs", str(runs / "neuron"),
                           str(runs / "local"), "--rtol", "1e-5", "--tags", "train/loss", "train/grad_norm",
                           "train/lr_generator", "train/lr_compressor", "eval/loss"],
                          cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(losses(runs / "neuron")) == 4
    # the loop wrote NxD's trainer format: markers, xser shards, user content with the data position
    tag = runs / "neuron" / "checkpoints" / "step_0000004"
    assert (tag / "done").is_file() and (tag / "user_content.pt").is_file() and (tag / "trainer_state.json").is_file()
    assert (tag / "model" / "dp_rank_00_tp_rank_00_pp_rank_00.pt.tensors").is_dir()
    assert (runs / "neuron" / "final" / "scaledown_config.json").is_file()


def test_resume_continues_the_losses_exactly(runs, subprocess_env_module):
    first = losses(runs / "neuron")
    resumed = runs / "resumed"
    run([sys.executable, RUNNER, *FLAGS, "--zero1", "false", "--output_dir", str(resumed),
         "--resume_from", str(runs / "neuron" / "checkpoints" / "step_0000002")], subprocess_env_module)
    again = losses(resumed)
    assert sorted(again) == [3, 4]
    for step in (3, 4):
        assert again[step] == pytest.approx(first[step], rel=1e-6, abs=0)


def test_converter_reads_the_backend_checkpoint_and_its_output_resumes(runs, subprocess_env_module, tmp_path):
    """scaledown convert reads what the backend wrote (xser, Adam moments), and the NxD backend resumes its output."""
    from scaledown.checkpoint.nxd_format import read_nxd
    source = runs / "neuron" / "checkpoints" / "step_0000002"
    ckpt = read_nxd(str(source))
    assert ckpt.optimizer is not None and ckpt.optimizer.step == 2
    run([sys.executable, "-m", "scaledown.cli.main", "convert", "--from", "nxd", "--to", "nxd", str(source),
         str(tmp_path / "converted")], subprocess_env_module)
    converted = tmp_path / "converted" / "step_0000002"
    assert (converted / "trainer_state.json").is_file()
    out = tmp_path / "from_converted"
    run([sys.executable, RUNNER, *FLAGS, "--zero1", "false", "--output_dir", str(out), "--resume_from",
         str(converted)], subprocess_env_module)
    first, again = losses(runs / "neuron"), losses(out)
    for step in (3, 4):
        assert again[step] == pytest.approx(first[step], rel=1e-5)


@pytest.mark.slow
def test_two_tensor_parallel_ranks_under_torchrun_match_one_process(runs, subprocess_env_module, tmp_path):
    out = tmp_path / "tp2"
    run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29562", RUNNER,
         *FLAGS, "--tensor_parallel_size", "2", "--zero1", "false", "--eval_max_examples", "0",
         "--output_dir", str(out)], subprocess_env_module, timeout=900)
    single, tp2 = losses(runs / "local"), losses(out)
    for step in range(1, 5):
        assert tp2[step] == pytest.approx(single[step], rel=2e-4)
    shards = sorted(os.listdir(out / "checkpoints" / "step_0000004" / "model"))
    assert "dp_rank_00_tp_rank_01_pp_rank_00.pt" in shards
