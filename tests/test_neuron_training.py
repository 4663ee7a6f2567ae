# NxD backend end to end through launchers/train_trn1.py on the NxD TEST DOUBLE, in the configuration a user gets.
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNER = os.path.join(ROOT, "tests", "nxd_double", "run.py")
# The defaults a user gets: ZeRO-1 (NxD's NeuronZero1Optimizer in the double: sharded fp32 states, its own clipping),
# activation checkpointing (NxD's reentrant one) and the run's static shapes. bf16 is the default too, but in bf16 no
# run can be compared with another at float32 precision: these runs use fp32 (same code path except the dtype and
# ZeRO-1's fp32 gradient-accumulation hook), and the tp 2 run below runs bf16 with that hook and KV replication.
FLAGS = ["--max_steps", "4", "--batch_size", "8", "--micro_batch_size", "4", "--logging_steps", "1", "--save_steps", "2",
         "--eval_steps", "0", "--use_bf16", "false", "--gradient_checkpointing", "true", "--zero1", "true",
         "--num_train_examples", "64", "--num_eval_examples", "8", "--eval_max_examples", "4", "--max_new_tokens", "4",
         "--seed", "5", "--generator_warmup_ratio", "0"]
pytestmark = pytest.mark.nxd_double
# Tolerances. The NxD path computes the same arithmetic on other shapes: documents and tokens padded to the run's
# static shapes, logits at every position (static_shapes), TP partial sums all-reduced, pipeline stages' gradients
# summed over gloo. Float32 sums then round in another order: on one step from a trained tiny model, per-tensor
# gradients differ by up to 1.5e-5 relative (compressor q/k projections, whose gradients are sums that mostly
# cancel) while the total grad norm agrees to 8 digits. Over 60 steps (tiny default recipe, fp32, warm-up
# included) losses stayed within 2.4e-7 relative of the one-process run, grad norms within 3.7e-5; TP=2 losses
# within 2.2e-7 (README, Trn1 section, has the commands). rtol 1e-5 on 4-step losses and grad norms leaves room for
# BLAS/thread differences, and catches any real mistake (a wrong shard or a lost gradient is >1e-3).


def free_port() -> str:
    """A port nobody listens on now: fixed ports collide when test runs share a machine."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def run(argv, env, timeout=600):
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def losses(run_dir):
    from scaledown.training.compare_runs import read_scalars
    return read_scalars(run_dir)["train/loss"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, subprocess_env_module):
    """One NxD (tp 1, double) run and the same run on the one-process backend (its own checkpointing: exact)."""
    base = tmp_path_factory.mktemp("nxd")
    env = subprocess_env_module
    run([sys.executable, RUNNER, *FLAGS, "--output_dir", str(base / "neuron")], env)
    run([sys.executable, "train.py", *FLAGS, "--output_dir", str(base / "local")], env)
    return base


@pytest.fixture(scope="module")
def subprocess_env_module():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
               MASTER_PORT=free_port())
    return env


def compare(ours, reference, tags, rtol="1e-5"):
    proc = subprocess.run([sys.executable, "-m", "scaledown.cli.main", "compare-runs", str(ours), str(reference),
                           "--rtol", rtol, "--tags", *tags], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_neuron_run_matches_the_one_process_backend(runs):
    compare(runs / "neuron", runs / "local", ["train/loss", "train/grad_norm", "train/lr_generator",
                                              "train/lr_compressor", "eval/loss"])
    assert len(losses(runs / "neuron")) == 4
    # the loop wrote NxD's trainer format: markers, xser shards, user content with the data position, and the
    # optimizer as ZeRO-1 writes it (torch-xla's base_state of this data-parallel rank's shards)
    from scaledown.checkpoint.nxd_files import read_shard
    tag = runs / "neuron" / "checkpoints" / "step_0000004"
    assert (tag / "done").is_file() and (tag / "user_content.pt").is_file() and (tag / "trainer_state.json").is_file()
    assert (tag / "model" / "dp_rank_00_tp_rank_00_pp_rank_00.pt.tensors").is_dir()
    optim = read_shard(str(tag / "optim" / "dp_rank_00_tp_rank_00_pp_rank_00.pt"))
    assert optim["state"] == {} and optim["base_state"] and optim["shape_info"]
    assert (runs / "neuron" / "final" / "scaledown_config.json").is_file()


def test_zero1_resume_continues_the_losses_exactly(runs, subprocess_env_module):
    first = losses(runs / "neuron")
    resumed = runs / "resumed"
    run([sys.executable, RUNNER, *FLAGS, "--eval_max_examples", "0", "--output_dir", str(resumed),
         "--resume_from", str(runs / "neuron" / "checkpoints" / "step_0000002")], subprocess_env_module)
    again = losses(resumed)
    assert sorted(again) == [3, 4]
    for step in (3, 4):   # fp32: ZeRO-1's fp32 master shards are the weights themselves (bf16: README)
        assert again[step] == pytest.approx(first[step], rel=1e-6, abs=0)


def test_damaged_xser_tensor_file_names_it_and_the_previous_checkpoint(runs, subprocess_env_module, tmp_path):
    import shutil
    out = tmp_path / "damaged"
    shutil.copytree(runs / "neuron" / "checkpoints", out / "checkpoints")
    tensors = out / "checkpoints" / "step_0000004" / "model" / "dp_rank_00_tp_rank_00_pp_rank_00.pt.tensors"
    victim = tensors / sorted(os.listdir(tensors))[0]
    victim.write_bytes(victim.read_bytes()[:40])
    proc = subprocess.run([sys.executable, RUNNER, *FLAGS, "--output_dir", str(out),
                           "--resume_from", "auto"], cwd=ROOT, env=subprocess_env_module, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"error: {victim} is damaged or truncated" in proc.stderr and "Traceback" not in proc.stderr
    assert f"The previous complete checkpoint is {out / 'checkpoints' / 'step_0000002'}" in proc.stderr


def test_converted_zero1_checkpoint_resumes_and_a_plain_one_is_refused(runs, subprocess_env_module, tmp_path):
    """scaledown convert reads the ZeRO-1 checkpoint (base_state per data-parallel rank joined into Adam moments);
    written back with --zero1_dp 1 the NxD backend resumes it under ZeRO-1; the plain layout is refused, naming
    the conversion (NxD's own load would fail with KeyError: 'base_state')."""
    from scaledown.checkpoint.nxd_format import read_nxd
    source = runs / "neuron" / "checkpoints" / "step_0000002"
    ckpt = read_nxd(str(source))
    assert ckpt.optimizer is not None and ckpt.optimizer.step == 2 and ckpt.optimizer.moments
    convert = [sys.executable, "-m", "scaledown.cli.main", "convert", "--from", "nxd", "--to", "nxd", str(source)]
    run([*convert, str(tmp_path / "zero1"), "--zero1_dp", "1"], subprocess_env_module)
    run([*convert, str(tmp_path / "plain")], subprocess_env_module)
    out = tmp_path / "from_converted"
    run([sys.executable, RUNNER, *FLAGS, "--eval_max_examples", "0", "--output_dir", str(out), "--resume_from",
         str(tmp_path / "zero1" / "step_0000002")], subprocess_env_module)
    first, again = losses(runs / "neuron"), losses(out)
    for step in (3, 4):
        assert again[step] == pytest.approx(first[step], rel=1e-5)
    refused = subprocess.run([sys.executable, RUNNER, *FLAGS, "--output_dir", str(tmp_path / "refused"),
                              "--resume_from", str(tmp_path / "plain" / "step_0000002")], cwd=ROOT,
                             env=subprocess_env_module, capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "--zero1_dp 1" in refused.stderr and "Traceback" not in refused.stderr


def test_init_from_an_nxd_checkpoint_builds_on_meta_and_computes_the_buffers(runs, subprocess_env_module):
    """--init_from an NxD tag builds the model on the meta device; NxD's reinit replaces parameters only, so the
    rotary inv_freq (in no checkpoint) must be computed by the backend: the step-0 evaluation of the started run
    equals the final evaluation of the run that wrote the tag (same weights, same rows)."""
    from scaledown.training.compare_runs import read_scalars
    out = runs / "init_from"
    run([sys.executable, RUNNER, *FLAGS, "--max_steps", "1", "--save_steps", "0", "--eval_max_examples", "0",
         "--output_dir", str(out), "--init_from", str(runs / "neuron" / "checkpoints" / "step_0000004")],
        subprocess_env_module)
    started, source = read_scalars(out)["eval/loss"], read_scalars(runs / "neuron")["eval/loss"]
    assert started[0] == pytest.approx(source[4], rel=1e-6)


@pytest.mark.slow
def test_two_tensor_parallel_ranks_in_bf16_with_kv_replication(runs, subprocess_env_module, tmp_path):
    """tp 2 on 2 ranks in bf16 (ZeRO-1's fp32 gradient-accumulation hook: gradients in main_grad, param.grad None)
    with --kv_replication 2 (both ranks hold both KV heads): the replica gradients are summed where the hook left
    them, so the replicas stay bit-identical; the bf16 losses stay near the fp32 one-process run's (measured 9.5e-5
    relative over 4 steps: rtol 1e-3), and generation gathers the vocabulary-parallel logits (ranks decode alike)."""
    from scaledown.checkpoint.nxd_files import read_shard
    out = tmp_path / "tp2"
    run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port(), RUNNER,
         *FLAGS, "--use_bf16", "true", "--tensor_parallel_size", "2", "--kv_replication", "2",
         "--output_dir", str(out)], subprocess_env_module, timeout=900)
    compare(out, runs / "local", ["train/loss", "eval/loss"], rtol="1e-3")
    model = out / "checkpoints" / "step_0000004" / "model"
    shards = [read_shard(str(model / f"dp_rank_00_tp_rank_0{t}_pp_rank_00.pt")) for t in (0, 1)]
    replicas = [k for k in shards[0] if ".k_proj." in k or ".v_proj." in k]
    assert replicas and shards[0][replicas[0]].dtype == torch.bfloat16
    assert all(torch.equal(shards[0][k], shards[1][k]) for k in replicas)
    assert any(not torch.equal(shards[0][k], shards[1][k]) for k in shards[0] if ".q_proj." in k)


@pytest.mark.slow
def test_two_pipeline_stages_match_one_process(runs, subprocess_env_module, tmp_path):
    """pp 2 on 2 ranks: training and evaluation micro-batches share one static shape (NxDPPModel keeps its first
    call's inter-stage shapes; the double fails on any other), losses, grad norms and eval losses as one process."""
    out = tmp_path / "pp2"
    run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port(), RUNNER,
         *FLAGS, "--pipeline_parallel_size", "2", "--output_dir", str(out)], subprocess_env_module, timeout=900)
    compare(out, runs / "local", ["train/loss", "train/grad_norm", "eval/loss", "eval/rerank_loss"])


@pytest.mark.slow
def test_two_pipeline_stages_of_two_tensor_parallel_ranks_match_one_process(runs, subprocess_env_module, tmp_path):
    """PP=2 x TP=2 on 4 ranks: NxDPPModel traces the compressor + generator (parallel layers and the vocabulary-
    parallel loss as recorded calls), cuts at the plan's layer, runs each stage on its own ranks (activations and
    their gradients cross over gloo); losses, gradient norms and the trained weights must equal the
    one-process run's. Same arithmetic per stage, so only float rounding (summation order) may differ (see the top)."""
    from scaledown.models.scaledown_model import ScaleDownModel
    from scaledown.training.compare_runs import read_scalars
    out = tmp_path / "pp2"
    pp_flags = [*FLAGS, "--pipeline_parallel_size", "2", "--tensor_parallel_size", "2"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "4", "--master_port", free_port(), RUNNER]
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
