# Pipeline stages of the torch backend (--pp) under real torchrun ranks on CPU (gloo): the one-process run, refusals.
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, tiny_config
from scaledown import ScaleDownModel
from scaledown.data import ScaleDownDataset
from scaledown.data.synthetic import generate_examples
from scaledown.training import ScaleDownTrainer
from test_torch_backend import COMMON, assert_same_export, logged, logged_losses, torchrun

pytestmark = pytest.mark.slow


def reference(tmp_path, name, evaluate=False, **overrides):
    """The one-process run of tests/torch_native_run.py's settings (its evaluation rows when `evaluate`)."""
    config = tiny_config(output_dir=str(tmp_path / name), **{**COMMON, "eval_max_examples": 4 if evaluate else 0,
                                                             **overrides})
    data = ScaleDownDataset(generate_examples(64, seed=1), config)
    evaluation = ScaleDownDataset(generate_examples(4, seed=9), config) if evaluate else None
    return ScaleDownTrainer(ScaleDownModel(config), config, data, evaluation, progress=False).train()


@pytest.fixture
def env(subprocess_env):
    return dict(subprocess_env, OMP_NUM_THREADS="1")


@pytest.mark.parametrize("ranks,flags", [(2, []), (4, ["--tp", "2"])], ids=["pp2", "pp2xtp2"])
def test_two_stages_weight_the_issues_split_batch_as_one_process(tmp_path, env, ranks, flags):
    # tests/loss_split.py: micro-batch 1 holds the two 1-word answers (1 document each) alone, micro-batch 2 the two
    # ~30-word answers (5 documents): the schedule's per-micro-batch losses must add up to the global token- and
    # document-weighted objective (a mean of micro-batch means would weigh the short answers ~15x more). pp2xtp2:
    # each stage also TP-sharded (a 3-D mesh pp x dp x tp), its last stage's loss vocabulary-parallel.
    from deepspeed_runs import free_port
    from loss_split import split_flags, write_split_data
    from test_loss_split_backends import STEPS, assert_same_run
    data = write_split_data(str(tmp_path / "split.jsonl"))
    reference = str(tmp_path / "one_process")
    proc = subprocess.run([sys.executable, "train.py", *split_flags(data, STEPS), "--micro_batch_size", "4",
                           "--output_dir", reference], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = str(tmp_path / "pp2")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
                           "--master_port", str(free_port()), "-m", "scaledown.cli.main", "train", "--backend", "torch",
                           "--pp", "2", *flags, *split_flags(data, STEPS), "--micro_batch_size", "2", "--output_dir",
                           out], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "accumulation 2 x data-parallel ranks 1" in proc.stdout, proc.stdout[-2000:]   # ranks = 2 stages x tp
    assert ("x tensor parallel 2 (world 4" in proc.stdout) == bool(flags), proc.stdout[-2000:]
    # no stage generates answers: the summary line reports the loss it measured, not an accuracy of 0
    assert "held-out eval loss (no answers were generated)" in proc.stdout and "accuracy (answer" not in proc.stdout
    assert_same_run(out, reference, rel=1e-5)


def test_two_stages_train_evaluate_and_export_the_one_process_run(tmp_path, env):
    # tiny preset: 2 compressor + 4 generator layers; stage 0 = compressor, its tail and generator layer 0, stage 1 =
    # generator layers 1-3, norm, head; reranking scores cross the cut with the hidden states; clipping at 1.0
    pairs = ["pipeline_parallel_size=2", "enable_reranking=true", "eval_max_examples=4"]
    staged, log = torchrun(2, tmp_path, "pp", env, *pairs)
    assert "accumulation 4 x data-parallel ranks 1" in log, log[-2000:]   # 2 ranks = 2 stages
    local = reference(tmp_path, "local", evaluate=True, enable_reranking=True)
    assert len(logged_losses(tmp_path / "pp")) == 4
    assert logged_losses(tmp_path / "pp") == pytest.approx(logged_losses(tmp_path / "local"), rel=1e-5)
    assert logged(tmp_path / "pp", "train/grad_norm") == pytest.approx(logged(tmp_path / "local", "train/grad_norm"),
                                                                       rel=1e-5)
    assert logged(tmp_path / "pp", "train/rerank_loss") == pytest.approx(
        logged(tmp_path / "local", "train/rerank_loss"), rel=1e-5)
    # evaluation: losses and token accuracy through the stages; no answers are generated under --pp
    for key in ("eval/loss", "eval/token_accuracy", "eval/rerank_loss"):
        assert staged["eval_after"][key] == pytest.approx(local.eval_after[key], rel=1e-5), key
    assert "eval/accuracy" not in staged["eval_after"] and "eval/accuracy" in local.eval_after
    assert_same_export(staged["final_dir"], local.final_dir)


def test_three_stages_gpipe_cut_inside_the_compressor_path_without_reranking(tmp_path, env):
    # 6 layers / 3: stage 0 = the compressor's layers (its states and the token embeddings cross the cut), stage 1 =
    # compressor tail + generator layers 0-1, stage 2 = generator layers 2-3. Reranking off (data without scores):
    # the last stage's stand-in for the memory tokens keeps rr_embedding None (it raised AttributeError)
    torchrun(3, tmp_path, "pp3", env, "pipeline_parallel_size=3", "pipeline_schedule=\"gpipe\"", "max_steps=2",
             "enable_reranking=false")
    reference(tmp_path, "local", max_steps=2, enable_reranking=False)
    assert logged_losses(tmp_path / "pp3") == pytest.approx(logged_losses(tmp_path / "local"), rel=1e-5)
    assert logged(tmp_path / "pp3", "train/grad_norm") == pytest.approx(
        logged(tmp_path / "local", "train/grad_norm"), rel=1e-5)


def test_a_two_stage_checkpoint_resumes_on_two_stages_and_on_one_process(tmp_path, env):
    pairs = ["pipeline_parallel_size=2", "save_steps=2", "eval_max_examples=0"]
    torchrun(2, tmp_path, "full", env, *pairs)
    os.makedirs(tmp_path / "cut" / "checkpoints")
    shutil.copytree(tmp_path / "full" / "checkpoints" / "step_0000002", tmp_path / "cut" / "checkpoints" / "step_0000002")
    resumed, log = torchrun(2, tmp_path, "cut", env, *pairs, "_resume=true")
    assert "resumed from" in log and "at step 2/4" in log
    assert resumed["steps"] == 4
    assert logged_losses(tmp_path / "cut") == pytest.approx(logged_losses(tmp_path / "full")[2:], rel=1e-5)
    # and by one process without stages: DCP reshards the stages' weights and AdamW moments into the whole model
    os.makedirs(tmp_path / "one" / "checkpoints")
    shutil.copytree(tmp_path / "full" / "checkpoints" / "step_0000002", tmp_path / "one" / "checkpoints" / "step_0000002")
    torchrun(1, tmp_path, "one", env, "save_steps=2", "eval_max_examples=0", "_resume=true")
    assert logged_losses(tmp_path / "one") == pytest.approx(logged_losses(tmp_path / "full")[2:], rel=1e-5)


def run_cli(tmp_path, env, *flags):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "scaledown.cli.main", "train", "--backend", "torch", "--preset", "tiny",
                           "--max_steps", "1", "--eval_max_examples", "0", *flags, "--output_dir", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return proc, out


def test_refusals_name_the_flag_before_any_model_is_built(tmp_path, env):
    from loss_split import make_tied_generator
    # a tied generator's embedding (stage 0) and lm_head (last stage) would be one weight on two stages
    tied = make_tied_generator(str(tmp_path / "tied"))
    proc, out = run_cli(tmp_path, env, "--pp", "2", "--generator_model_name", tied, "--generator_warmup_ratio", "0")
    assert proc.returncode == 2 and "ties lm_head" in proc.stderr and "--pp 1" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not out.exists()
    # 2 compressor + 4 generator layers cannot fill 7 stages
    proc, out = run_cli(tmp_path, env, "--pp", "7", "--generator_warmup_ratio", "0")
    assert proc.returncode == 2 and "--pp 7 is larger than the model's 6 decoder layers" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
    # the tiny preset warms the generator up, which recopies layers across stages (the same check, in process)
    from scaledown.errors import ConfigError
    from scaledown.training.backends.torch_native.pipeline_schedule import check_pipeline_config
    with pytest.raises(ConfigError, match="--generator_warmup_ratio 0"):
        check_pipeline_config(tiny_config(pipeline_parallel_size=2, generator_warmup_ratio=0.25))


def test_the_mesh_puts_stages_outermost_and_names_each_factor():
    from scaledown.errors import ConfigError
    from scaledown.training.backends.torch_native.mesh import mesh_shape
    shape = mesh_shape(8, 2, 1, 2)
    assert (shape.pipeline, shape.replicate, shape.shard, shape.dp) == (2, 2, 2, 4)
    assert shape.describe() == "2 pipeline stages x HSDP: 2 replicas x 2 shards"
    with pytest.raises(ConfigError, match="pipeline_parallel_size 2 .* divide the 3 ranks"):
        mesh_shape(3, 1, 1, 2)
    with pytest.raises(ConfigError, match="data_parallel_replicate_size 3 .* divide the 4 ranks of each pipeline stage"):
        mesh_shape(8, 3, 1, 2)
