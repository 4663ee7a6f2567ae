# Refuse a training command started as one of several `srun` tasks that no launcher tied together into ranks.
"""A plain `srun --ntasks N python launchers/train_gpu.py ...` starts N copies that know their SLURM task number
(SLURM_PROCID, SLURM_STEP_NUM_TASKS) but carry none of torchrun's RANK / WORLD_SIZE / MASTER_ADDR: each would
initialise a world of one, train the whole run as rank 0 and write the same checkpoints and final/ as the others.
SLURM tasks are not mapped to ranks here (the rendezvous host and port would have to be guessed from the node
list): the command refuses before anything is built and prints the command that starts the ranks properly.
"""
from __future__ import annotations

import os
import shlex
import sys
from typing import Mapping, Optional, Sequence

from scaledown.errors import ConfigError

TORCHRUN_KEYS = ("RANK", "WORLD_SIZE")
# MPI launchers (mpirun, srun --mpi=pmix): DeepSpeed discovers the ranks through mpi4py
MPI_KEYS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE")


def slurm_step_tasks(env: Mapping[str, str]) -> Optional[tuple[int, int]]:
    """(task, tasks) inside an `srun` step; None outside one. SLURM_STEP_NUM_TASKS exists only in a step (an sbatch
    script's own `python` line sees SLURM_NTASKS of the allocation but runs once): as scaledown/data/launch.py."""
    if "SLURM_PROCID" not in env or "SLURM_STEP_NUM_TASKS" not in env:
        return None
    try:
        return int(env["SLURM_PROCID"]), int(env["SLURM_STEP_NUM_TASKS"])
    except ValueError:
        return None


def launched_as_tasks(env: Optional[Mapping[str, str]] = None) -> bool:
    """Some launcher says this process is one of several (an srun step's tasks, or torchrun's WORLD_SIZE)."""
    env = os.environ if env is None else env
    step = slurm_step_tasks(env)
    return bool(step and step[1] > 1) or env.get("WORLD_SIZE", "1") not in ("", "1")


def _torchrun_line(entry: str, argv: Sequence[str], per_node: str) -> str:
    flags = " ".join(shlex.quote(a) for a in argv)
    return (f"srun --ntasks-per-node=1 torchrun --nnodes $SLURM_NNODES --nproc_per_node {per_node} "
            f"--rdzv_backend c10d --rdzv_endpoint $(scontrol show hostnames $SLURM_JOB_NODELIST | head -n 1):29500 "
            f"{entry} {flags}").strip()


def check_task_launch(entry: str, argv: Optional[Sequence[str]] = None,
                      env: Optional[Mapping[str, str]] = None) -> None:
    """Raise ConfigError when this process is one of several tasks that would each train alone.

    entry: "train.py" (one process only), "launchers/train_gpu.py" (torchrun, deepspeed or MPI ranks) or
    "launchers/train_trn1.py" (torchrun ranks). Call it before any data, model or process group is built.
    """
    env = os.environ if env is None else env
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = " ".join(shlex.quote(a) for a in argv)
    step = slurm_step_tasks(env)
    world = env.get("WORLD_SIZE")
    if entry == "train.py":
        if step and step[1] > 1:
            raise ConfigError(
                f"train.py was started as task {step[0]} of a {step[1]}-task `srun` step. train.py trains in one "
                f"process, so every task would train the same run alone and overwrite the others' checkpoints. Start "
                f"one task: `srun --ntasks=1 python train.py {flags}`; to train on several GPUs use the DeepSpeed "
                f"launcher, one torchrun per node: `{_torchrun_line('launchers/train_gpu.py', argv, '$SLURM_GPUS_ON_NODE')}` "
                f"(`sbatch slurm/train_gpu.sh` does this).")
        if world and world.isdigit() and int(world) > 1:
            raise ConfigError(
                f"train.py was started as rank {env.get('RANK', '?')} of {world} (WORLD_SIZE={world}, set by torchrun "
                f"or deepspeed). train.py trains in one process: each rank would train alone and overwrite the others. "
                f"Use the distributed launcher with the same flags: `torchrun --nproc_per_node {world} "
                f"launchers/train_gpu.py {flags}`, or run `python train.py {flags}` without a launcher.")
        return
    if not step or step[1] <= 1 or all(k in env for k in TORCHRUN_KEYS):
        return
    if entry == "launchers/train_gpu.py" and any(k in env for k in MPI_KEYS):
        return
    if entry == "launchers/train_trn1.py":
        how = (f"one torchrun per Trn1 node: `python launchers/train_trn1.py --dry_run {flags}` prints the exact "
               f"per-node commands, and `sbatch slurm/train_trn1.sh {flags}` runs them")
    else:
        how = (f"one torchrun per node: `{_torchrun_line(entry, argv, '$SLURM_GPUS_ON_NODE')}` "
               f"(`sbatch slurm/train_gpu.sh {flags}` does this)")
    raise ConfigError(
        f"{entry} was started as task {step[0]} of a {step[1]}-task `srun` step without torchrun (SLURM_PROCID is set, "
        f"RANK/WORLD_SIZE are not): every task would train alone as rank 0 and overwrite the others' checkpoints and "
        f"final/. SLURM tasks are not ranks by themselves. Start the ranks with {how}.")
