# Launch paths and failures with real ranks: mpirun, every shipped DeepSpeed config, a killed rank then resume.
import glob
import os
import shutil
import subprocess
import time

import psutil
import pytest
import torch

from deepspeed_runs import (DS_CONFIGS, ROOT, SMALL, assert_halved, command, export_key, load_export, log_tail,
                            make_folder_generator, require, require_deepspeed, run, tb_scalars, zero3_config,
                            zero_to_fp32)

pytestmark = pytest.mark.slow


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _require_mpi():
    try:
        import mpi4py  # noqa: F401
        ok = shutil.which("mpirun") is not None
    except ImportError:
        ok = False
    require("mpirun with mpi4py", ok, "SCALEDOWN_REQUIRE_MPI", "apt-get install openmpi-bin libopenmpi-dev; "
            "pip install mpi4py")


def test_mpirun_pretrained_folder_model_bf16(tmp_path):
    """mpirun ranks (mpi4py discovery); a pretrained-style folder model loads straight into ZeRO-3 partitions."""
    require_deepspeed()
    _require_mpi()
    folder = make_folder_generator(str(tmp_path / "mistral_folder"))
    config = zero3_config(str(tmp_path / "zero3_split_all.json"), stage3_param_persistence_threshold=0)
    out = str(tmp_path / "run")
    args = ["--deepspeed", config, "--preset", "tiny", "--generator_model_name", folder, "--use_bf16", "true",
            "--generator_warmup_ratio", "0", "--max_steps", "3", *SMALL, "--batch_size", "4",
            "--micro_batch_size", "2", "--output_dir", out]
    log = str(tmp_path / "mpirun.log")
    proc = run("mpirun", 2, args, _env(), log)
    assert proc.returncode == 0, log_tail(log)
    losses = tb_scalars(out, "train/loss")
    assert sorted(losses) == [1, 2, 3] and losses[3] < losses[1]
    checkpoint = os.path.join(out, "checkpoints", "step_0000003")
    assert_halved(checkpoint)
    # zero_to_fp32 rebuilds trained weights from fp32 masters and frozen ones from their bf16 shards (0.19.8 then
    # writes everything as fp32): compare like with like, in the bf16 the module holds
    consolidated = zero_to_fp32(os.path.join(out, "checkpoints"), str(tmp_path / "fp32"), _env())
    exported = load_export(os.path.join(out, "final"))
    assert "base" not in exported  # an unchanged pretrained base is referenced, not copied
    from safetensors.torch import load_file
    pretrained = load_file(os.path.join(folder, "model.safetensors"))
    for name, tensor in consolidated.items():
        part, key = export_key(name)
        reference = pretrained[key] if part == "base" else exported[part][key]  # frozen base: the folder's
        assert torch.equal(tensor.to(torch.bfloat16), reference.to(torch.bfloat16)), name


@pytest.mark.parametrize("config_name", sorted(os.path.basename(p) for p in glob.glob(os.path.join(DS_CONFIGS,
                                                                                                   "*.json"))))
def test_every_shipped_config_trains_through_the_entry_point(config_name, tmp_path):
    """One rank, no launcher: warm-up step, phase switch, compression step, checkpoint, export."""
    require_deepspeed()
    out = str(tmp_path / "run")
    args = ["--deepspeed", os.path.join(DS_CONFIGS, config_name), "--generator_warmup_ratio", "0.5", "--max_steps", "2",
            "--batch_size", "4", "--micro_batch_size", "2", "--logging_steps", "1", "--num_eval_examples", "3",
            "--eval_max_examples", "2", "--output_dir", out]
    log = str(tmp_path / "run.log")
    proc = run("python", 1, args, _env(), log)
    assert proc.returncode == 0, log_tail(log)
    assert os.path.isfile(os.path.join(out, "checkpoints", "step_0000002", "trainer_state.json"))
    assert os.path.isfile(os.path.join(out, "final", "scaledown_config.json"))
    assert sorted(tb_scalars(out, "train/loss")) == [1, 2]


def test_killed_rank_ends_the_job_then_resume_continues(tmp_path):
    """SIGKILL one of two ranks: the deepspeed launcher ends non-zero within a bounded time; auto-resume works."""
    require_deepspeed()
    out = str(tmp_path / "run")
    args = ["--deepspeed", os.path.join(DS_CONFIGS, "zero3.json"), "--generator_warmup_ratio", "0",
            "--max_steps", "200", "--save_steps", "2", *SMALL, "--eval_max_examples", "0", "--dist_timeout", "60",
            "--output_dir", out]
    log = open(tmp_path / "killed.log", "w")
    launcher = subprocess.Popen(command("deepspeed", 2, args), env=_env(), cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        first = os.path.join(out, "checkpoints", "step_0000002", "trainer_state.json")
        deadline = time.time() + 600
        while not os.path.exists(first) and launcher.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        assert os.path.exists(first), log_tail(str(tmp_path / "killed.log"))
        ranks = [p for p in psutil.Process(launcher.pid).children(recursive=True)
                 if "train_gpu.py" in " ".join(p.cmdline()) and "--local_rank=1" in p.cmdline()]
        assert len(ranks) == 1
        killed_at = time.time()
        ranks[0].kill()
        returncode = launcher.wait(timeout=120)
        took = time.time() - killed_at
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, 9)
    assert returncode != 0
    assert took < 90, f"the job needed {took:.0f}s to end after a rank died"
    done = sorted(d for d in os.listdir(os.path.join(out, "checkpoints"))
                  if os.path.isfile(os.path.join(out, "checkpoints", d, "trainer_state.json")))
    last = int(done[-1].split("_")[1])
    resume_log = str(tmp_path / "resume.log")
    args[args.index("--max_steps") + 1] = str(last + 1)
    proc = run("torchrun", 2, [*args, "--resume_from", "auto", "--allow_changed_settings"], _env(), resume_log)
    assert proc.returncode == 0, log_tail(resume_log)
    assert f"resumed from {os.path.join(out, 'checkpoints', done[-1])}" in log_tail(resume_log, 100_000)
    assert os.path.isfile(os.path.join(out, "checkpoints", f"step_{last + 1:07d}", "trainer_state.json"))
