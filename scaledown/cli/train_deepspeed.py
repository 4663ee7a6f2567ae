# `launchers/train_gpu.py`: every train.py flag plus --deepspeed / --local_rank, trained on the DeepSpeed backend.
from __future__ import annotations

import os
from typing import Optional, Sequence

from scaledown.cli.args import build_parser
from scaledown.cli.errors import run_cli
from scaledown.cli.training_run import run_training, train_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_DS_CONFIG = os.path.join(REPO, "ds_configs", "zero3.json")
DESCRIPTION = ("Train ScaleDown with DeepSpeed ZeRO on GPUs (or CPUs, gloo). Launch with `deepspeed`, `torchrun "
               "--nproc_per_node N`, `mpirun -np N`, `sbatch slurm/train_gpu.sh`, or plain `python` for one rank. "
               "With no data flags it trains the offline tiny preset on built-in synthetic data. --batch_size is "
               "the global batch; micro batch, accumulation and data-parallel ranks are derived once and written "
               "into the DeepSpeed config.")


def add_deepspeed_flags(parser) -> None:
    group = parser.add_argument_group("deepspeed")
    group.add_argument("--deepspeed", metavar="PATH", default=DEFAULT_DS_CONFIG,
                       help="DeepSpeed JSON config (ds_configs/zero3.json, zero3_offload.json, zero2.json). Batch "
                            "keys, gradient_clipping and bf16/fp16 come from the flags; \"auto\" is resolved.")
    group.add_argument("--local_rank", "--local-rank", type=int, default=None,
                       help="Set by the deepspeed launcher; the rank's device comes from LOCAL_RANK.")
    group.add_argument("--dist_timeout", "--dist-timeout", type=float, default=1800.0, metavar="SECONDS",
                       help="How long a rank waits in a collective for a peer before failing (a dead rank "
                            "then ends the job instead of hanging it).")


def deepspeed_main(argv: Optional[Sequence[str]] = None, prog: str = "launchers/train_gpu.py") -> int:
    parser = build_parser(prog, DESCRIPTION)
    add_deepspeed_flags(parser)
    args = parser.parse_args(argv)
    from scaledown.cli.task_check import check_task_launch
    check_task_launch("launchers/train_gpu.py", argv)
    config = train_config(args)

    def backend_factory(cfg):
        from scaledown.training.backends.deepspeed import DeepSpeedBackend
        return DeepSpeedBackend(cfg, args.deepspeed, timeout_s=args.dist_timeout)

    return run_training(config, args, backend_factory, prog=prog, launcher_flags=["--deepspeed", args.deepspeed])


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(lambda: deepspeed_main(argv))
