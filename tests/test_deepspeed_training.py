# Real 2-rank ZeRO-3 runs (deepspeed launcher, torchrun): learning, partitioning, parity, exact resume, zero_to_fp32.
import os
import shutil
import subprocess
import sys

import pytest
import torch

from deepspeed_runs import (ROOT, SMALL, assert_halved, export_key, load_export, log_tail, require_deepspeed, run,
                            tb_scalars, zero3_config, zero_to_fp32)

pytestmark = pytest.mark.slow

# warm-up 2 steps on uncompressed documents, then 4 compression steps: the phase switch (new engine, compressor
# recopied from the warmed-up generator under gathered ZeRO-3 weights) happens inside the run
STEPS = ["--generator_warmup_ratio", "0.34", "--max_steps", "6", "--save_steps", "3", "--eval_steps", "3"]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module")
def zero3_run(tmp_path_factory):
    """One 2-rank ZeRO-3 run through the deepspeed launcher, shared by the assertions below."""
    require_deepspeed()
    root = tmp_path_factory.mktemp("zero3")
    # parameters below the persistence threshold stay whole on every rank: none here, so all are split
    config = zero3_config(str(root / "zero3_split_all.json"), stage3_param_persistence_threshold=0)
    out = str(root / "two_ranks")
    args = ["--deepspeed", config, *STEPS, *SMALL, "--output_dir", out]
    log = str(root / "two_ranks.log")
    proc = run("deepspeed", 2, args, _env(), log)
    assert proc.returncode == 0, log_tail(log)
    return {"root": root, "out": out, "args": args, "config": config}


def test_deepspeed_launcher_two_ranks_learn_and_split_every_parameter(zero3_run):
    out = zero3_run["out"]
    losses = tb_scalars(out, "train/loss")
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]
    assert losses[2] < losses[1]                       # warm-up (documents as text)
    assert losses[6] < losses[4] < losses[3]           # compression fine-tuning
    count = assert_halved(os.path.join(out, "checkpoints", "step_0000006"))
    assert count > 100  # generator base, LoRA, compressor: every one split in two
    # rank 0 alone writes TensorBoard, with the one-process trainer's tags
    events = [f for f in os.listdir(os.path.join(out, "runs")) if f.startswith("events.out.tfevents")]
    assert len(events) == 1
    for tag in ("train/ce_loss", "train/grad_norm", "train/lr_generator", "train/lr_compressor",
                "perf/tokens_per_sec", "perf/examples_per_sec", "perf/memory_gb"):
        assert tb_scalars(out, tag), tag


def test_evaluation_with_generation_under_zero3_uneven_rows(zero3_run):
    # 5 eval rows over 2 ranks (3 + 2) and 3 generated answers (2 + 1): even_shard pads, synced_gpus keeps
    # both ranks stepping; the run finishing with eval values at the start, mid-run and the end shows no hang
    accuracy = tb_scalars(zero3_run["out"], "eval/accuracy")
    assert sorted(accuracy) == [0, 3, 6]
    assert sorted(tb_scalars(zero3_run["out"], "eval/loss")) == [0, 3, 6]


def test_two_ranks_match_the_one_process_trainer(zero3_run, tmp_path):
    out = str(tmp_path / "one_process")
    args = [a for a in zero3_run["args"] if a != zero3_run["config"] and a != "--deepspeed"]
    args[args.index("--output_dir") + 1] = out
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args], env=_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours, reference = tb_scalars(zero3_run["out"], "train/loss"), tb_scalars(out, "train/loss")
    assert sorted(ours) == sorted(reference)
    for step in reference:
        assert ours[step] == pytest.approx(reference[step], rel=1e-4), (step, ours, reference)
    ours_eval, reference_eval = tb_scalars(zero3_run["out"], "eval/loss"), tb_scalars(out, "eval/loss")
    for step in reference_eval:
        assert ours_eval[step] == pytest.approx(reference_eval[step], rel=1e-4)


def test_torchrun_resume_equals_uninterrupted(zero3_run, tmp_path):
    """Stop after step 3 (its checkpoint alone is copied over), resume under torchrun: steps 4-6 are identical."""
    out = str(tmp_path / "resumed")
    os.makedirs(os.path.join(out, "checkpoints"))
    shutil.copytree(os.path.join(zero3_run["out"], "checkpoints", "step_0000003"),
                    os.path.join(out, "checkpoints", "step_0000003"))
    args = list(zero3_run["args"])
    args[args.index("--output_dir") + 1] = out
    log = str(tmp_path / "resumed.log")
    proc = run("torchrun", 2, [*args, "--resume_from", "auto"], _env(), log)
    assert proc.returncode == 0, log_tail(log)
    assert "resumed from" in log_tail(log, 100_000)
    uninterrupted, resumed = tb_scalars(zero3_run["out"], "train/loss"), tb_scalars(out, "train/loss")
    assert sorted(resumed) == [4, 5, 6]
    for step in resumed:
        assert resumed[step] == pytest.approx(uninterrupted[step], rel=1e-6, abs=1e-7), (step, resumed, uninterrupted)
    assert resumed[6] < resumed[4]
    assert_halved(os.path.join(out, "checkpoints", "step_0000006"))


def test_damaged_file_of_one_rank_stops_both_ranks_naming_it(zero3_run, tmp_path):
    """Rank 1's optimizer partition of the newest checkpoint is truncated: both ranks stop at once (no hang in a
    collective), with one paragraph naming the file and the previous complete checkpoint."""
    out = str(tmp_path / "damaged")
    shutil.copytree(os.path.join(zero3_run["out"], "checkpoints"), os.path.join(out, "checkpoints"))
    victim = os.path.join(out, "checkpoints", "step_0000006", "zero_pp_rank_1_mp_rank_00_optim_states.pt")
    with open(victim, "r+b") as f:
        f.truncate(os.path.getsize(victim) // 2)
    args = list(zero3_run["args"])
    args[args.index("--output_dir") + 1] = out
    log = str(tmp_path / "damaged.log")
    proc = run("torchrun", 2, [*args, "--resume_from", "auto"], _env(), log)
    text = log_tail(log, 100_000)
    assert proc.returncode != 0
    assert f"error: {victim} is damaged or truncated" in text, text[-3000:]
    assert f"The previous complete checkpoint is {os.path.join(out, 'checkpoints', 'step_0000003')}" in text
    assert "another rank found a damaged file" in text   # rank 0, whose own files are fine


def test_checkpoint_layout_and_zero_to_fp32_equals_export(zero3_run, tmp_path):
    root = os.path.join(zero3_run["out"], "checkpoints")
    with open(os.path.join(root, "latest")) as f:
        assert f.read().strip() == "step_0000006"
    for tag in ("step_0000003", "step_0000006"):
        files = set(os.listdir(os.path.join(root, tag)))
        assert {"trainer_state.json", "zero_pp_rank_0_mp_rank_00_model_states.pt",
                "zero_pp_rank_1_mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt",
                "zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= files
    consolidated = zero_to_fp32(root, str(tmp_path / "fp32"), _env())   # reads `latest`, written by us
    exported = load_export(os.path.join(zero3_run["out"], "final"))
    assert set(exported) == {"compressor", "adapter", "base"}   # warm-up changed the base: it is exported
    assert len(consolidated) == sum(len(v) for v in exported.values())
    for name, tensor in consolidated.items():
        part, key = export_key(name)
        assert torch.equal(tensor, exported[part][key]), name   # fp32 run: master weights == module weights


def test_converted_universal_checkpoint_resumes_on_one_rank(zero3_run, tmp_path):
    """The 2-rank step-3 checkpoint through `scaledown convert --to deepspeed`, resumed by train.py on 1 rank:
    weights, fp32 masters, Adam moments and the LR schedule carry, so steps 4-6 land where the 2-rank run did."""
    source = os.path.join(zero3_run["out"], "checkpoints", "step_0000003")
    converted = str(tmp_path / "universal")
    proc = subprocess.run([sys.executable, "-m", "scaledown.cli.main", "convert", "--from", "deepspeed", "--to",
                           "deepspeed", source, converted], env=_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tag = os.path.join(converted, "step_0000003")
    assert os.path.isdir(os.path.join(tag, "zero"))   # DeepSpeed's universal format, no per-rank partitions
    args = list(zero3_run["args"])
    out = str(tmp_path / "one_rank")
    args[args.index("--output_dir") + 1] = out
    log = str(tmp_path / "one_rank.log")
    proc = run("torchrun", 1, [*args, "--resume_from", tag], _env(), log)
    assert proc.returncode == 0, log_tail(log)
    uninterrupted, resumed = tb_scalars(zero3_run["out"], "train/loss"), tb_scalars(out, "train/loss")
    assert sorted(resumed) == [4, 5, 6]
    for step in resumed:   # 1 rank sums the same examples in another order: float32 rounding only
        assert resumed[step] == pytest.approx(uninterrupted[step], rel=1e-4), (step, resumed, uninterrupted)
