# `scaledown convert --from dcp / --to dcp` against a real 2-rank torch-backend run (torchrun, gloo, FSDP2 shards).
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from scaledown.checkpoint import convert
from scaledown.checkpoint.dcp_format import read_dcp
from scaledown.errors import CheckpointError
from tests.convert_helpers import assert_same_tensors

pytestmark = pytest.mark.slow
RUNNER = os.path.join(ROOT, "tests", "torch_native_run.py")
STEP2, STEP4 = "step_0000002", "step_0000004"


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def torchrun(ranks, out_dir, *pairs):
    from deepspeed_runs import free_port
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port",
           str(free_port()), RUNNER, str(out_dir) + ".json", str(out_dir), *pairs]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def losses(run_dir):
    from deepspeed_runs import tb_scalars
    return tb_scalars(str(run_dir), "train/loss")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """4 steps on 2 FSDP2 ranks with reranking, DCP checkpoints at steps 2 and 4, and the run's own final/ export."""
    out = tmp_path_factory.mktemp("dcp") / "run"
    torchrun(2, out, "save_steps=2", "eval_max_examples=0", "enable_reranking=true")
    assert sorted(os.listdir(out / "checkpoints" / STEP4 / "model_and_optimizer")) == [
        ".metadata", "__0_0.distcp", "__1_0.distcp"]
    return out


def test_two_rank_checkpoint_to_hf_equals_the_runs_own_export(run, tmp_path):
    result = convert("dcp", "hf", str(run / "checkpoints" / STEP4), str(tmp_path / "hf"))
    assert_same_tensors(tmp_path / "hf", run / "final")   # bit-exact, same dtypes
    # the run folder names its newest complete checkpoint
    assert convert("dcp", "hf", str(run), str(tmp_path / "hf2")).path == str(tmp_path / "hf2")
    assert_same_tensors(tmp_path / "hf2", run / "final")
    assert any("not carried into a Hugging Face folder" in n for n in result.notes)


@pytest.mark.parametrize("via,options", [("deepspeed", {}), ("nxd", {"tp": 2, "pp": 2})])
def test_round_trip_through_deepspeed_and_nxd_keeps_weights_and_moments(run, tmp_path, via, options):
    source = str(run / "checkpoints" / STEP4)
    middle = convert("dcp", via, source, str(tmp_path / via), **options)
    assert any(c.startswith("Adam moments and step (4)") for c in middle.carried), middle.carried
    back = convert(via, "dcp", middle.path, str(tmp_path / "back"))
    assert os.path.basename(back.path) == STEP4   # the training checkpoint's tag, trainer_state.json carried
    a, b = read_dcp(source), read_dcp(back.path)
    assert a.weights.keys() == b.weights.keys() and a.optimizer.moments.keys() == b.optimizer.moments.keys()
    assert a.optimizer.moments and a.optimizer.step == b.optimizer.step == 4
    for name in a.weights:
        assert torch.equal(a.weights[name], b.weights[name]), name
    for name, moments in a.optimizer.moments.items():
        for key, value in moments.items():
            assert torch.equal(value, b.optimizer.moments[name][key]), (name, key)
    assert b.trainer_state["step"] == 4 and b.trainer_state["backend"] == "torch"


def test_a_converted_checkpoint_resumes_as_the_same_run(run, tmp_path):
    """step 2 -> DeepSpeed -> DCP, resumed on one rank: steps 3-4 log the uninterrupted 2-rank run's losses, so
    weights, Adam moments, step and the LR schedule all came through."""
    ds = convert("dcp", "deepspeed", str(run / "checkpoints" / STEP2), str(tmp_path / "ds"))
    convert("deepspeed", "dcp", ds.path, str(tmp_path / "cut" / "checkpoints"))
    log = torchrun(1, tmp_path / "cut", "save_steps=2", "eval_max_examples=0", "enable_reranking=true",
                   "_resume=true")
    assert "resumed from" in log and "at step 2/4" in log
    ours, reference = losses(tmp_path / "cut"), losses(run)
    assert sorted(ours) == [3, 4]
    for step in ours:
        assert ours[step] == pytest.approx(reference[step], rel=1e-5), (step, ours, reference)


def test_hf_to_dcp_then_resume_from_trains_from_those_weights(run, tmp_path):
    """A Hugging Face folder has no optimizer: DST/step_0000000 (Adam from zero) that `--resume_from` trains from;
    its first loss equals a fresh run started with --init_from the same folder."""
    result = convert("hf", "dcp", str(run / "final"), str(tmp_path / "new" / "checkpoints"))
    assert result.path == str(tmp_path / "new" / "checkpoints" / "step_0000000")
    flags = ["--preset", "tiny", "--max_steps", "2", "--batch_size", "4", "--eval_max_examples", "0",
             "--gradient_checkpointing", "false", "--generator_warmup_ratio", "0", "--lora_dropout", "0",
             "--logging_steps", "1", "--num_train_examples", "16", "--num_eval_examples", "2"]
    cli = [sys.executable, "-m", "scaledown.cli.main", "train", "--backend", "torch", *flags]
    resumed = subprocess.run([*cli, "--resume_from", result.path, "--output_dir", str(tmp_path / "new")],
                             cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "at step 0/2" in resumed.stdout
    assert f"was converted from {run / 'final'}" in resumed.stdout
    # with no model flag at all (not even --preset) the model is the converted checkpoint's: the command's defaults
    # (a Mistral-7B generator, 8 compressor layers) were compared with it before, and the resume was refused
    from scaledown.cli.args import build_parser
    from scaledown.cli.training_run import train_config
    bare = train_config(build_parser("train.py", "").parse_args(
        ["--resume_from", result.path, "--output_dir", str(tmp_path / "bare"), "--batch_size", "4"]))
    saved = json.loads((run / "final" / "scaledown_config.json").read_text())["config"]
    # ... and so are its prompt, optimizer and precision settings (the tiny preset's, though the folder records no
    # preset): before, the command's defaults (bf16, lr 1e-4, the OSCAR system prompt) were silently taken
    for name in ("generator_model_name", "num_compressor_layers", "compressor_type", "lora_r", "compression_rate",
                 "learning_rate_generator", "system_prompt", "use_bf16", "lora_dropout", "num_documents_train"):
        assert getattr(bare, name) == saved[name], name
    fresh = subprocess.run([*cli, "--init_from", str(run / "final"), "--output_dir", str(tmp_path / "fresh")],
                           cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    ours, reference = losses(tmp_path / "new"), losses(tmp_path / "fresh")
    assert sorted(ours) == [1, 2]
    assert ours[1] == pytest.approx(reference[1], rel=1e-6)


@pytest.fixture
def damaged_copy(run, tmp_path):
    """A copy of the run's checkpoints (step 2 complete and intact)."""
    copy = tmp_path / "copy"
    shutil.copytree(run / "checkpoints", copy / "checkpoints")
    return copy


@pytest.mark.parametrize("damage", ["missing_shard", "truncated_metadata"])
def test_a_damaged_checkpoint_names_the_file_and_the_previous_complete_one(damaged_copy, tmp_path, damage):
    step4 = damaged_copy / "checkpoints" / STEP4 / "model_and_optimizer"
    if damage == "missing_shard":
        os.remove(step4 / "__1_0.distcp")
        file = step4 / "__1_0.distcp"
    else:
        data = (step4 / ".metadata").read_bytes()
        (step4 / ".metadata").write_bytes(data[:len(data) // 2])
        file = step4 / ".metadata"
    previous = str(damaged_copy / "checkpoints" / STEP2)
    with pytest.raises(CheckpointError) as info:
        convert("dcp", "hf", str(damaged_copy / "checkpoints" / STEP4), str(tmp_path / "out"))
    assert str(file) in str(info.value) and f"previous complete checkpoint is {previous}" in str(info.value)
    assert not (tmp_path / "out").exists()
    # resuming it says the same, exit 2, no traceback (the runner's data settings differ from the CLI's: allowed)
    proc = subprocess.run([sys.executable, "-m", "scaledown.cli.main", "train", "--backend", "torch", "--preset",
                           "tiny", "--resume_from", "auto", "--output_dir", str(damaged_copy),
                           "--allow_changed_settings"], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert str(file) in proc.stderr and f"previous complete checkpoint is {previous}" in proc.stderr
    assert "Traceback" not in proc.stderr
