# The PyTorch-native backend's device mesh: data-parallel replicas x shards (HSDP) x tensor parallel, checked first.
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from scaledown.errors import ConfigError


@dataclass(frozen=True)
class MeshShape:
    """world = replicate x shard x tp. shard: ranks one FSDP2 group splits every weight over; replicate: copies of
    those groups (HSDP: sharded within a node, replicated across nodes); tp: ranks one DTensor tensor-parallel group
    splits each projection over (innermost, so a TP group stays inside a node). replicate and shard are data
    parallel: dp_size = world / tp, and the tp ranks of one data-parallel rank read the same micro-batches."""
    replicate: int
    shard: int
    tp: int = 1

    @property
    def dp(self) -> int:
        return self.replicate * self.shard

    @property
    def world(self) -> int:
        return self.dp * self.tp

    def describe(self) -> str:
        if self.replicate == 1:
            text = f"FSDP2 over {self.shard} rank{'s' if self.shard != 1 else ''}"
        else:
            text = f"HSDP: {self.replicate} replicas x {self.shard} shards"
        if self.tp > 1:
            text += (f" x tensor parallel {self.tp} (world {self.world} = data-parallel {self.dp} x tp {self.tp})")
        return text


def mesh_shape(world: int, replicate: int, tensor_parallel: int, pipeline_parallel: int) -> MeshShape:
    """The mesh for `world` ranks; raises ConfigError naming the factor and the fix before anything is built.

    Pipeline parallel degrees above 1 are refused here (the NeuronX Distributed backend runs the plan's stages)."""
    if pipeline_parallel != 1:
        raise ConfigError(f"--backend torch runs FSDP2 data parallel and tensor parallel only; pipeline_parallel_size "
                          f"{pipeline_parallel} must be 1. Use --pp 1, or the neuron backend for pipeline stages.")
    if tensor_parallel < 1 or world % tensor_parallel:
        divisors = [d for d in range(1, world + 1) if world % d == 0]
        raise ConfigError(f"tensor_parallel_size {tensor_parallel} must be at least 1 and divide the {world} ranks "
                          f"(ranks = data-parallel x tensor-parallel); with {world} ranks use --tp "
                          f"{' / '.join(map(str, divisors))}, or launch a multiple of {max(tensor_parallel, 1)} ranks.")
    dp = world // tensor_parallel
    if replicate < 1 or dp % replicate:
        raise ConfigError(f"data_parallel_replicate_size {replicate} must be at least 1 and divide the {dp} "
                          f"data-parallel ranks ({world} ranks / tp {tensor_parallel}; HSDP: replicas x shards = "
                          f"data-parallel ranks); e.g. --data_parallel_replicate_size 1.")
    return MeshShape(replicate, dp // replicate, tensor_parallel)


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
    """A 1-D ("dp_shard",) mesh, 2-D ("dp_replicate", "dp_shard") for HSDP, with a last "tp" dim when tp > 1
    (row-major: tp innermost, torchtitan's order)."""
    from torch.distributed.device_mesh import init_device_mesh
    sizes, names = [shape.shard], ["dp_shard"]
    if shape.replicate != 1:
        sizes, names = [shape.replicate, shape.shard], ["dp_replicate", "dp_shard"]
    if shape.tp != 1:
        sizes, names = sizes + [shape.tp], names + ["tp"]
    return init_device_mesh(device_type, tuple(sizes), mesh_dim_names=tuple(names))


def data_parallel_mesh(mesh, shape: MeshShape):
    """The dims FSDP2 shards over (the whole mesh without tp)."""
    if shape.tp == 1:
        return mesh
    return mesh["dp_shard"] if shape.replicate == 1 else mesh["dp_replicate", "dp_shard"]


def data_parallel_rank(mesh, shape: MeshShape) -> int:
    """This rank's index among the data-parallel ranks (the sampler's share): its (replicate, shard) coordinate,
    the same for every tp rank of one group."""
    coordinate = mesh.get_coordinate()
    if shape.replicate == 1:
        return coordinate[0]
    return coordinate[0] * shape.shard + coordinate[1]


def local_device(device_type: str) -> torch.device:
    if device_type == "cuda":
        index = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")
