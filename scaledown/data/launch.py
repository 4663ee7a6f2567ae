# Who am I among the data-pipeline workers: torchrun / SLURM ranks, or local worker processes spawned here.
"""Under torchrun (RANK, WORLD_SIZE) or an `srun` step (SLURM_PROCID, SLURM_STEP_NUM_TASKS) every
process runs the same command and takes its rank from the launcher; rank 0 also prepares the inputs
and merges. Without a launcher, `--workers N` starts N local worker processes of the same command
(marked by SCALEDOWN_PREP_WORKER=rank/N) and this process prepares, waits and merges.
The workers coordinate only through files in the shared work folder, so nodes need no rendezvous.
"""
from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Optional, Sequence

from scaledown.errors import ScaleDownError

WORKER_ENV = "SCALEDOWN_PREP_WORKER"


class WorkerFailed(ScaleDownError):
    """A worker process died; the blocks it finished are kept and a rerun resumes."""


@dataclass(frozen=True)
class WorkerEnv:
    rank: int
    world: int
    local_rank: int
    local_world: int
    launcher: str           # "torchrun", "slurm" or "local" (a worker spawned by --workers)


def _first_int(text: str) -> int:
    """SLURM task counts look like '4' or '4(x2)'."""
    digits = "".join(ch for ch in text.split("(")[0].split(",")[0] if ch.isdigit())
    return int(digits or 1)


def detect_worker_env(environ: Optional[dict] = None) -> Optional[WorkerEnv]:
    """The launcher's rank layout, or None for a plain single process (the coordinator)."""
    env = os.environ if environ is None else environ
    if WORKER_ENV in env:
        rank, world = (int(x) for x in env[WORKER_ENV].split("/"))
        return WorkerEnv(rank, world, rank, world, "local")
    if "RANK" in env and "WORLD_SIZE" in env:
        world = int(env["WORLD_SIZE"])
        return WorkerEnv(int(env["RANK"]), world, int(env.get("LOCAL_RANK", env["RANK"])),
                         int(env.get("LOCAL_WORLD_SIZE", world)), "torchrun")
    # SLURM_STEP_NUM_TASKS is set inside an srun step only: a plain `python` line of an sbatch
    # script sees SLURM_NTASKS of the whole allocation but runs once, so it is not a worker.
    if "SLURM_PROCID" in env and "SLURM_STEP_NUM_TASKS" in env:
        world = int(env["SLURM_STEP_NUM_TASKS"])
        local_world = _first_int(env.get("SLURM_STEP_TASKS_PER_NODE", str(world)))
        return WorkerEnv(int(env["SLURM_PROCID"]), world, int(env.get("SLURM_LOCALID", 0)), local_world, "slurm")
    return None


def gpu_for(local_rank: int, environ: Optional[dict] = None) -> Optional[str]:
    """The CUDA_VISIBLE_DEVICES value that gives this local worker one GPU of its own, or None."""
    env = os.environ if environ is None else environ
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = [d for d in visible.split(",") if d.strip()]
        return devices[local_rank % len(devices)] if devices else None
    count = len(glob.glob("/dev/nvidia[0-9]*"))   # without importing torch (must precede CUDA init)
    return str(local_rank % count) if count else None


def pin_gpu(worker: WorkerEnv) -> None:
    """Several workers per machine: one GPU each (vLLM and transformers then use "cuda:0")."""
    if worker.local_world > 1:
        device = gpu_for(worker.local_rank)
        if device is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = device


def spawn_local_workers(argv: Sequence[str], count: int) -> float:
    """Run `count` worker processes of this command; return their wall time. Raises WorkerFailed."""
    threads = str(max(1, (os.cpu_count() or 1) // count))
    procs: list[subprocess.Popen] = []
    start = time.time()
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a terminated coordinator stops its workers too
    try:
        for rank in range(count):
            env = dict(os.environ)
            env[WORKER_ENV] = f"{rank}/{count}"
            env.setdefault("OMP_NUM_THREADS", threads)   # share the cores instead of oversubscribing them
            device = gpu_for(rank)
            if device is not None:
                env["CUDA_VISIBLE_DEVICES"] = device
            procs.append(subprocess.Popen([sys.executable, "-m", "scaledown.data.prepare_dataset", *argv], env=env))
        while True:
            codes = [p.poll() for p in procs]
            failed = [(rank, code) for rank, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                rank, code = failed[0]
                raise WorkerFailed(f"worker {rank} of {count} (pid {procs[rank].pid}) {_describe(code)}. Blocks "
                                   f"finished before are kept: rerun the same command to resume.")
            if all(code == 0 for code in codes):
                return time.time() - start
            time.sleep(0.2)
    finally:
        _stop(procs)
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code} (its error is printed above)"


def _stop(procs: list[subprocess.Popen]) -> None:
    """Terminate workers still running (another failed, or this process was interrupted)."""
    alive = [p for p in procs if p.poll() is None]
    for p in alive:
        p.terminate()
    deadline = time.time() + 10
    for p in alive:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
