# The PyTorch-native backend (FSDP2 on a DeviceMesh, DCP checkpoints) under real torchrun ranks on CPU (gloo).
import json
import math
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, tiny_config
from scaledown import ScaleDownModel
from scaledown.data import ScaleDownDataset
from scaledown.data.synthetic import generate_examples
from scaledown.errors import ConfigError
from scaledown.training import ScaleDownTrainer
from scaledown.training.backends.torch_native.mesh import mesh_shape

pytestmark = pytest.mark.slow
RUNNER = os.path.join(ROOT, "tests", "torch_native_run.py")
# the runner's settings (tests/torch_native_run.py), for the one-process reference
COMMON = dict(max_steps=4, batch_size=8, micro_batch_size=2, use_bf16=False, gradient_checkpointing=False,
              lora_dropout=0.0, logging_steps=1)


def logged(run_dir, tag):
    """A TensorBoard tag's values per step, as rank 0 logged them."""
    from deepspeed_runs import tb_scalars
    return [value for _, value in sorted(tb_scalars(str(run_dir), tag).items())]


def logged_losses(run_dir):
    """train/loss per step as rank 0 logged it: the global batch's objective, all-reduced over the ranks."""
    return logged(run_dir, "train/loss")


def torchrun(ranks, tmp_path, name, env, *pairs):
    out = tmp_path / f"{name}.json"
    from deepspeed_runs import free_port
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port",
           str(free_port()), RUNNER, str(out), str(tmp_path / name), *pairs]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def assert_same_export(final_dir, reference_dir):
    """Two runs' exported models hold the same tensors (up to Adam's per-element step noise)."""
    exported = ScaleDownModel.from_pretrained(final_dir).state_dict()
    reference = ScaleDownModel.from_pretrained(reference_dir).state_dict()
    assert exported.keys() == reference.keys()
    for key in reference:
        # Adam normalises each element's step: a gradient summed in another order can move a near-zero one ~5e-5
        torch.testing.assert_close(exported[key], reference[key], rtol=1e-3, atol=1e-4, msg=key)


def one_process(tmp_path, **overrides):
    config = tiny_config(output_dir=str(tmp_path / "local"), eval_max_examples=0, **{**COMMON, **overrides})
    data = ScaleDownDataset(generate_examples(64, seed=1), config)
    return ScaleDownTrainer(ScaleDownModel(config), config, data, progress=False).train()


@pytest.fixture
def env(subprocess_env):
    return dict(subprocess_env, OMP_NUM_THREADS="1")


def test_two_fsdp2_ranks_train_the_one_process_run_and_export_it(tmp_path, env):
    # a warm-up phase too: the compressor restarts from the trained (sharded) generator layers
    pairs = ["enable_reranking=true", "generator_warmup_ratio=0.25", "eval_max_examples=0"]
    sharded, log = torchrun(2, tmp_path, "fsdp", env, *pairs)
    assert "backend torch" in log
    held = re.search(r"parameter elements held by this rank: ([\d,]+) of ([\d,]+)", log)
    share = int(held.group(1).replace(",", "")) / int(held.group(2).replace(",", ""))
    assert 0.45 < share < 0.55, held.group(0)   # FSDP2 over 2 ranks: half of every weight, frozen ones too
    local = one_process(tmp_path, enable_reranking=True, generator_warmup_ratio=0.25)
    assert len(logged_losses(tmp_path / "fsdp")) == 4
    assert logged_losses(tmp_path / "fsdp") == pytest.approx(logged_losses(tmp_path / "local"), rel=1e-5)
    assert_same_export(sharded["final_dir"], local.final_dir)


def test_a_two_rank_checkpoint_resumes_on_one_rank_as_the_same_run(tmp_path, env):
    full, _ = torchrun(2, tmp_path, "full", env, "save_steps=2", "eval_max_examples=0")
    # a run stopped after its step-2 checkpoint (DCP, 2 shards), resumed by one process: DCP reshards
    os.makedirs(tmp_path / "cut" / "checkpoints")
    shutil.copytree(tmp_path / "full" / "checkpoints" / "step_0000002", tmp_path / "cut" / "checkpoints" / "step_0000002")
    resumed, log = torchrun(1, tmp_path, "cut", env, "save_steps=2", "eval_max_examples=0", "_resume=true")
    assert "resumed from" in log and "at step 2/4" in log
    assert resumed["steps"] == 4
    assert logged_losses(tmp_path / "cut") == pytest.approx(logged_losses(tmp_path / "full")[2:], rel=1e-5)


def test_a_resume_on_as_many_ranks_continues_each_ranks_dropout(tmp_path, env):
    """LoRA dropout on (the default 0.1; the tiny preset has 0): each rank's generators are saved in the checkpoint
    and restored on its own rank, so the resumed steps equal the uninterrupted ones (before, every rank continued
    from rank 0's generators: step 3's grad norm 2.062 vs 2.076 in a fresh user's run)."""
    pairs = ["save_steps=2", "eval_max_examples=0", "lora_dropout=0.1"]
    torchrun(2, tmp_path, "full", env, *pairs)
    os.makedirs(tmp_path / "cut" / "checkpoints")
    shutil.copytree(tmp_path / "full" / "checkpoints" / "step_0000002", tmp_path / "cut" / "checkpoints" / "step_0000002")
    torchrun(2, tmp_path, "cut", env, *pairs, "_resume=true")
    assert logged_losses(tmp_path / "cut") == logged_losses(tmp_path / "full")[2:]
    assert logged(tmp_path / "cut", "train/grad_norm") == logged(tmp_path / "full", "train/grad_norm")[2:]


def test_bf16_training_goes_on_after_the_generator_warm_up(tmp_path, env):
    """The default bf16 compute with a generator warm-up: the compressor's FSDP2 units are frozen in the warm-up, so
    FSDP2 had fixed no gradient reduce dtype for them, and the first step after it failed in backward ("gradient with
    dtype BFloat16 ... grad_dtype Float"); the backend recomputes the dtypes at each phase."""
    run, _ = torchrun(2, tmp_path, "bf16_warmup", env, "use_bf16=true", "generator_warmup_ratio=0.5", "max_steps=4")
    assert run["steps"] == 4 and len(logged_losses(tmp_path / "bf16_warmup")) == 4
    assert all(math.isfinite(loss) for loss in logged_losses(tmp_path / "bf16_warmup"))


def test_hsdp_replicas_train_the_same_run(tmp_path, env):
    # with activation checkpointing, the default every user gets
    hsdp, _ = torchrun(2, tmp_path, "hsdp", env, "data_parallel_replicate_size=2", "eval_max_examples=0",
                       "gradient_checkpointing=true")
    one_process(tmp_path, gradient_checkpointing=True)
    assert hsdp["steps"] == 4
    assert logged_losses(tmp_path / "hsdp") == pytest.approx(logged_losses(tmp_path / "local"), rel=1e-5)


def test_mesh_errors_name_the_factor_and_the_fix():
    assert (mesh_shape(8, 2, 1, 1).replicate, mesh_shape(8, 2, 1, 1).shard) == (2, 4)
    with pytest.raises(ConfigError, match="data_parallel_replicate_size 3 .* divide the 8 data-parallel ranks"):
        mesh_shape(8, 3, 1, 1)
    # tensor parallel: test_torch_tensor_parallel; pipeline stages: test_torch_pipeline; both: a 3-D pp x dp x tp mesh
    both = mesh_shape(8, 1, 2, 2)
    assert (both.pipeline, both.dp, both.tp) == (2, 2, 2)
    with pytest.raises(ConfigError, match="tensor_parallel_size 4"):   # tp must divide each stage's 6 ranks
        mesh_shape(12, 1, 4, 2)


def test_the_launcher_and_scaledown_train_run_it_as_the_readme_says(tmp_path, env):
    from deepspeed_runs import free_port
    flags = ["--preset", "tiny", "--max_steps", "2", "--batch_size", "4", "--eval_max_examples", "0",
             "--gradient_checkpointing", "false"]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(free_port()), "launchers/train_torch.py", *flags, "--output_dir", str(tmp_path / "two")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-2000:]
    assert "backend torch" in two.stdout and "data-parallel ranks 2" in two.stdout
    state = json.loads((tmp_path / "two" / "checkpoints" / "step_0000002" / "trainer_state.json").read_text())
    assert state["backend"] == "torch" and state["world_size"] == 2
    ScaleDownModel.from_pretrained(str(tmp_path / "two" / "final"))
    # one process, no launcher: the same backend on a one-rank mesh; a DeepSpeed flag is refused by name
    one = subprocess.run([sys.executable, "-m", "scaledown.cli.main", "train", "--backend", "torch", *flags,
                          "--output_dir", str(tmp_path / "one")], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=900)
    assert one.returncode == 0 and "backend torch" in one.stdout, one.stderr[-2000:]
    wrong = subprocess.run([sys.executable, "-m", "scaledown.cli.main", "train", "--backend", "torch", *flags,
                            "--deepspeed", "ds_configs/zero3.json", "--output_dir", str(tmp_path / "x")],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2 and "--deepspeed is a flag of the deepspeed backend" in wrong.stderr
    assert "Traceback" not in wrong.stderr and not (tmp_path / "x").exists()
