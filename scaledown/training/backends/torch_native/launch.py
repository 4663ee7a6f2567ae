# The torch backend's launch side: how `scaledown train --backend torch` / launchers/train_torch.py build it.
from __future__ import annotations

LAUNCHER = "launchers/train_torch.py"
DESCRIPTION = ("Train ScaleDown with the PyTorch-native backend: FSDP2 (fully_shard) data parallelism on a "
               "DeviceMesh, HSDP with --data_parallel_replicate_size, pipeline stages with --pp, DCP checkpoints. "
               "Launch with `torchrun "
               "--nproc_per_node N` (CPU ranks: gloo; GPUs: NCCL), `sbatch slurm/train_gpu.sh --backend torch`, "
               "or plain `python` for one rank. --batch_size is the global batch.")


def build_torch(config, run):
    from scaledown.training.backends.torch_native import TorchBackend
    return TorchBackend(config)
