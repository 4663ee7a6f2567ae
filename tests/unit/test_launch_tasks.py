# Plain `srun` tasks (SLURM variables, no torchrun): every training entry point refuses before building anything.
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from scaledown.cli.task_check import check_task_launch, launched_as_tasks
from scaledown.errors import ConfigError

# the environment of task 1 of a 2-task `srun` step on one node, as SLURM sets it (no torchrun variables)
TASK_1_OF_2 = {"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2", "SLURM_LOCALID": "1",
               "SLURM_STEP_TASKS_PER_NODE": "2", "SLURM_NNODES": "1", "SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0"}
LAUNCHER_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE",
                 "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE")
ENTRIES = {"train.py": [sys.executable, "train.py"],
           "launchers/train_gpu.py": [sys.executable, "launchers/train_gpu.py"],
           "launchers/train_trn1.py": [sys.executable, os.path.join("tests", "nxd_double", "run.py")]}


def _env(subprocess_env, **extra):
    env = {k: v for k, v in subprocess_env.items() if k not in LAUNCHER_KEYS and not k.startswith("SLURM_")}
    return {**env, **TASK_1_OF_2, **extra}


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_srun_task_refuses_before_building_anything(entry, tmp_path, subprocess_env):
    out = tmp_path / "run"
    flags = ["--max_steps", "1", "--batch_size", "4", "--output_dir", str(out)]
    proc = subprocess.run([*ENTRIES[entry], *flags], cwd=ROOT, env=_env(subprocess_env), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    message = proc.stderr
    assert "task 1 of a 2-task `srun` step" in message and "Traceback" not in message
    assert "torchrun" in message and f"--output_dir {out}" in message   # the command to use, with the user's flags
    assert not out.exists()   # no checkpoint, no final/, no log: nothing was trained or written


def test_rules_for_launchers_that_do_set_ranks():
    argv = ["--max_steps", "1"]
    # torchrun inside an srun step (slurm/train_gpu.sh, slurm/train_trn1.sh): ranks come from torchrun
    torchrun = {**TASK_1_OF_2, "SLURM_STEP_NUM_TASKS": "2", "RANK": "3", "WORLD_SIZE": "4"}
    check_task_launch("launchers/train_gpu.py", argv, torchrun)
    check_task_launch("launchers/train_trn1.py", argv, torchrun)
    # srun --mpi=pmix: DeepSpeed reads the ranks through MPI
    check_task_launch("launchers/train_gpu.py", argv, {**TASK_1_OF_2, "PMIX_RANK": "1"})
    # one task, or an sbatch script's own line (SLURM_NTASKS of the allocation, no step): a single process
    one = {"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1", "SLURM_NTASKS": "1"}
    batch_script = {"SLURM_PROCID": "0", "SLURM_NTASKS": "8"}
    for env in (one, batch_script):
        assert not launched_as_tasks(env)
        for entry in ENTRIES:
            check_task_launch(entry, argv, env)
    # train.py is one process: several torchrun ranks of it would each train alone too
    with pytest.raises(ConfigError, match="launchers/train_gpu.py --max_steps 1"):
        check_task_launch("train.py", argv, {"RANK": "1", "WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="srun --ntasks=1 python train.py --max_steps 1"):
        check_task_launch("train.py", argv, TASK_1_OF_2)
