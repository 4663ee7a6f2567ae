# The device mesh of the PyTorch-native backend: data-parallel replicas x shards (HSDP), checked before any model.
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from scaledown.errors import ConfigError


@dataclass(frozen=True)
class MeshShape:
    """world = replicate x shard. shard: ranks one FSDP2 group splits every weight over; replicate: copies of those
    groups (HSDP: sharded within a node, replicated across nodes). Both are data parallel: dp_size = world."""
    replicate: int
    shard: int

    @property
    def world(self) -> int:
        return self.replicate * self.shard

    def describe(self) -> str:
        if self.replicate == 1:
            return f"FSDP2 over {self.shard} rank{'s' if self.shard != 1 else ''}"
        return f"HSDP: {self.replicate} replicas x {self.shard} shards"


def mesh_shape(world: int, replicate: int, tensor_parallel: int, pipeline_parallel: int) -> MeshShape:
    """The mesh for `world` ranks; raises ConfigError naming the factor and the fix before anything is built.

    tensor / pipeline parallel degrees above 1 are refused: this backend shards data-parallel only so far (the
    NeuronX Distributed backend runs the TP/PP plan)."""
    if tensor_parallel != 1 or pipeline_parallel != 1:
        raise ConfigError(f"--backend torch runs data parallel (FSDP2) only; tensor_parallel_size "
                          f"{tensor_parallel} and pipeline_parallel_size {pipeline_parallel} must be 1. Use "
                          f"--tp 1 --pp 1, or the neuron backend for tensor/pipeline parallel layouts.")
    if replicate < 1 or world % replicate:
        raise ConfigError(f"data_parallel_replicate_size {replicate} must be at least 1 and divide the {world} "
                          f"ranks (HSDP: replicas x shards = ranks); e.g. --data_parallel_replicate_size 1.")
    return MeshShape(replicate, world // replicate)


def init_process_group(device_type: str, timeout_s: float) -> None:
    """gloo on CPU; on GPUs NCCL for device tensors and gloo for host tensors (the loop's counts and flags)."""
    import datetime
    import torch.distributed as dist
    if dist.is_initialized():
        return
    if "RANK" not in os.environ:   # one process without a launcher
        from scaledown.training.backends.distributed_env import free_port
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=os.environ.get("MASTER_PORT") or str(free_port()))
    backend = "cpu:gloo,cuda:nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))


def build_mesh(shape: MeshShape, device_type: str):
    """A 1-D ("dp_shard",) mesh, or 2-D ("dp_replicate", "dp_shard") for HSDP."""
    from torch.distributed.device_mesh import init_device_mesh
    if shape.replicate == 1:
        return init_device_mesh(device_type, (shape.shard,), mesh_dim_names=("dp_shard",))
    return init_device_mesh(device_type, (shape.replicate, shape.shard), mesh_dim_names=("dp_replicate", "dp_shard"))


def local_device(device_type: str) -> torch.device:
    if device_type == "cuda":
        index = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")
