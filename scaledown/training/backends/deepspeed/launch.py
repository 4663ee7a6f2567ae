# The deepspeed backend's launch side: --deepspeed / --local_rank / --dist_timeout and how they build the backend.
from __future__ import annotations

import os

from scaledown.repo_files import REPO_DIR, repo_path

DEFAULT_DS_CONFIG = repo_path("ds_configs", "zero3.json")
LAUNCHER = "launchers/train_gpu.py"
DESCRIPTION = ("Train ScaleDown with DeepSpeed ZeRO on GPUs (or CPUs, gloo). Launch with `deepspeed`, `torchrun "
               "--nproc_per_node N`, `mpirun -np N`, `sbatch slurm/train_gpu.sh`, or plain `python` for one rank. "
               "With no data flags it trains the offline tiny preset on built-in synthetic data. --batch_size is "
               "the global batch; micro batch, accumulation and data-parallel ranks are derived once and written "
               "into the DeepSpeed config.")


def add_deepspeed_flags(parser) -> None:
    group = parser.add_argument_group("deepspeed backend")
    group.add_argument("--deepspeed", metavar="PATH", default=None,
                       help="DeepSpeed JSON config (ds_configs/zero3.json, zero3_offload.json, zero2.json). Batch "
                            "keys, gradient_clipping and bf16/fp16 come from the flags; \"auto\" is resolved. "
                            f"Default: {os.path.relpath(DEFAULT_DS_CONFIG, REPO_DIR)}.")
    group.add_argument("--local_rank", "--local-rank", type=int, default=None,
                       help="Set by the deepspeed launcher; the rank's device comes from LOCAL_RANK.")
    group.add_argument("--dist_timeout", "--dist-timeout", type=float, default=1800.0, metavar="SECONDS",
                       help="How long a rank waits in a collective for a peer before failing (a dead rank "
                            "then ends the job instead of hanging it).")


def deepspeed_launch(args) -> dict:
    path = args.deepspeed or DEFAULT_DS_CONFIG
    return {"options": {"deepspeed": path, "dist_timeout": args.dist_timeout}, "launcher_flags": ("--deepspeed", path)}


def build_deepspeed(config, run):
    from scaledown.training.backends.deepspeed.backend import DeepSpeedBackend
    return DeepSpeedBackend(config, run.options["deepspeed"], timeout_s=run.options["dist_timeout"])

