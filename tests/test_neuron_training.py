# NxD backend end to end through launchers/train_trn1.py on the NxD TEST DOUBLE: parity, resume, torchrun TP=2, convert.
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNER = os.path.join(ROOT, "tests", "nxd_double", "run.py")
FLAGS = ["--max_steps", "4", "--batch_size", "8", "--micro_batch_size", "4", "--logging_steps", "1", "--save_steps", "2",
         "--eval_steps", "0", "--use_bf16", "false", "--gradient_checkpointing", "false", "--num_train_examples", "64",
         "--num_eval_examples", "8", "--eval_max_examples", "4", "--max_new_tokens", "4", "--seed", "5",
         "--generator_warmup_ratio", "0"]
pytestmark = pytest.mark.nxd_double
# Tolerances. The NxD path computes the same arithmetic on other shapes: documents padded to the step's maximum,
# token lengths to multiples of 64, logits at every position (static_shapes), TP partial sums all-reduced, pipeline
# stages' gradients summed over gloo. Float32 sums then round in another order: on one step from a trained tiny
# model, per-tensor gradients differ by up to 1.5e-5 relative (compressor q/k projections, whose gradients are
# sums that mostly cancel) while the total grad norm agrees to 8 digits. Over 60 steps (tiny default recipe,
# fp32, warm-up included) losses stayed within 2.4e-7 relative of the one-process run, grad norms within 3.7e-5;
# TP=2 losses within 2.2e-7 (README, Trn1 section, has the commands). rtol 1e-5 on 4-step losses and grad norms
# leaves room for BLAS/thread differences, and catches any real mistake (a wrong shard or a lost gradient is >1e-3).


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


def test_damaged_xser_tensor_file_names_it_and_the_previous_checkpoint(runs, subprocess_env_module, tmp_path):
    import shutil
    out = tmp_path / "damaged"
    shutil.copytree(runs / "neuron" / "checkpoints", out / "checkpoints")
    tensors = out / "checkpoints" / "step_0000004" / "model" / "dp_rank_00_tp_rank_00_pp_rank_00.pt.tensors"
    victim = tensors / sorted(os.listdir(tensors))[0]
    victim.write_bytes(victim.read_bytes()[:40])
    proc = subprocess.run([sys.executable, RUNNER, *FLAGS, "--zero1", "false", "--output_dir", str(out),
                           "--resume_from", "auto"], cwd=ROOT, env=subprocess_env_module, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"error: {victim} is damaged or truncated" in proc.stderr and "Traceback" not in proc.stderr
    assert f"The previous complete checkpoint is {out / 'checkpoints' / 'step_0000002'}" in proc.stderr


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
        assert tp2[step] == pytest.approx(single[step], rel=1e-5)
    shards = sorted(os.listdir(out / "checkpoints" / "step_0000004" / "model"))
    assert "dp_rank_00_tp_rank_01_pp_rank_00.pt" in shards


@pytest.mark.slow
def test_two_pipeline_stages_of_two_tensor_parallel_ranks_match_one_process(runs, subprocess_env_module, tmp_path):
    """PP=2 x TP=2 on 4 ranks: NxDPPModel traces the compressor + generator (parallel layers and the vocabulary-
    parallel loss as recorded calls), cuts at the plan's layer, runs each stage on its own ranks (activations and
    their gradients cross over gloo); losses, gradient norms and the trained weights must equal the
    one-process run's. Same arithmetic per stage, so only float rounding (summation order) may differ (see the top)."""
    from scaledown.models.scaledown_model import ScaleDownModel
    from scaledown.training.compare_runs import read_scalars
    out = tmp_path / "pp2"
    pp_flags = [*FLAGS, "--pipeline_parallel_size", "2", "--tensor_parallel_size", "2", "--zero1", "false"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "4", "--master_port", "29563", RUNNER]
    run([*launch, *pp_flags, "--output_dir", str(out)], subprocess_env_module, timeout=900)
    single, pp2 = read_scalars(runs / "local"), read_scalars(out)
    for tag in ("train/loss", "train/grad_norm", "eval/loss", "eval/rerank_loss"):
        assert pp2[tag].keys() == single[tag].keys(), tag
        for step in single[tag]:
            assert pp2[tag][step] == pytest.approx(single[tag][step], rel=1e-5), tag
    # each rank saved and reloads its own stage (local_state_dict under the original names): resuming continues
    resumed = tmp_path / "pp2_resumed"
    run([*launch, *pp_flags, "--eval_max_examples", "0", "--output_dir", str(resumed), "--resume_from",
         str(out / "checkpoints" / "step_0000002")], subprocess_env_module, timeout=900)
    again = losses(resumed)
    assert sorted(again) == [3, 4]
    for step in (3, 4):
        assert again[step] == pytest.approx(pp2["train/loss"][step], rel=1e-6, abs=0)
    # every weight was trained by the stage that owns it (none left outside the stages, none frozen)
    shards = sorted(os.listdir(out / "checkpoints" / "step_0000004" / "model"))
    assert "dp_rank_00_tp_rank_01_pp_rank_01.pt" in shards
    reference = ScaleDownModel.from_pretrained(str(runs / "local" / "final")).state_dict()
    trained = ScaleDownModel.from_pretrained(str(out / "final")).state_dict()
    assert trained.keys() == reference.keys()
    # Adam divides each gradient entry by its own RMS: where an entry is rounding noise (~0), its sign can flip
    # between the two runs and that entry moves by up to ~lr per step the other way. So: nearly every entry equal
    # to 1e-6, and no entry further apart than two learning rates per step.
    steps, lr = 4, max(max(single[tag].values()) for tag in single if tag.startswith("train/lr_"))
    diffs = torch.cat([(trained[name] - value).abs().flatten() for name, value in reference.items()])
    assert float((diffs > 1e-6).float().mean()) < 1e-3
    assert float(diffs.max()) <= 2 * lr * steps
