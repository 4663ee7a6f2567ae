# Start torch.distributed under any launcher: deepspeed, torchrun, srun + torchrun, mpirun, or none (one rank).
from __future__ import annotations

import os
import socket
from datetime import timedelta

# Launchers that set RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT/LOCAL_RANK themselves.
ENV_LAUNCHER_KEYS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK")
# Set by MPI launchers (Open MPI, MPICH / Intel MPI, PMIx): ranks are discovered through mpi4py.
MPI_KEYS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE")
DEFAULT_PORT = 29500


def launcher_kind() -> str:
    """'env' (deepspeed / torchrun / srun+torchrun), 'mpi' (mpirun) or 'none' (plain `python ...`)."""
    if all(k in os.environ for k in ENV_LAUNCHER_KEYS):
        return "env"
    if any(k in os.environ for k in MPI_KEYS):
        return "mpi"
    return "none"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(timeout_s: float) -> str:
    """Initialise deepspeed.comm (gloo on CPU, nccl on GPUs) with a collective timeout; returns the launcher kind.

    The timeout bounds how long live ranks wait in a collective for a rank that died without its launcher
    noticing; launchers that watch their children (deepspeed, torchrun, mpirun) end the job sooner.
    """
    import deepspeed

    kind = launcher_kind()
    if kind == "none":  # one process: the same script runs without a launcher
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=os.environ.get("MASTER_PORT") or str(free_port()))
    # mpi4py discovery overwrites MASTER_PORT with this argument: honour the environment's choice
    port = int(os.environ.get("MASTER_PORT") or DEFAULT_PORT)
    deepspeed.init_distributed(dist_backend=None, auto_mpi_discovery=(kind == "mpi"), distributed_port=port,
                               verbose=False, timeout=timedelta(seconds=timeout_s))
    return kind
