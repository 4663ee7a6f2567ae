# The device mesh of the PyTorch-native backend: pipeline stages x data-parallel replicas x shards, checked first.
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from scaledown.errors import ConfigError


@dataclass(frozen=True)
class MeshShape:
    """world = pipeline x replicate x shard. shard: ranks one FSDP2 group splits every weight over; replicate: copies
    of those groups (HSDP: sharded within a node, replicated across nodes); both are data parallel:
    dp_size = replicate x shard. pipeline: stages (torch.distributed.pipelining), each with its own FSDP2 groups."""
    replicate: int
    shard: int
    pipeline: int = 1

    @property
    def dp(self) -> int:
        return self.replicate * self.shard

    @property
    def world(self) -> int:
        return self.pipeline * self.dp

    def describe(self) -> str:
        if self.replicate == 1:
            text = f"FSDP2 over {self.shard} rank{'s' if self.shard != 1 else ''}"
        else:
            text = f"HSDP: {self.replicate} replicas x {self.shard} shards"
        return text if self.pipeline == 1 else f"{self.pipeline} pipeline stages x {text}"


def mesh_shape(world: int, replicate: int, tensor_parallel: int, pipeline_parallel: int) -> MeshShape:
    """The mesh for `world` ranks; raises ConfigError naming the factor and the fix before anything is built.

    A tensor-parallel degree above 1 is refused: this backend shards data-parallel and pipeline stages only so far
    (the NeuronX Distributed backend runs the TP plan)."""
    if tensor_parallel != 1:
        raise ConfigError(f"--backend torch runs data parallel (FSDP2) and pipeline stages; tensor_parallel_size "
                          f"{tensor_parallel} must be 1. Use --tp 1, or the neuron backend for tensor parallel "
                          f"layouts.")
    if pipeline_parallel < 1 or world % pipeline_parallel:
        raise ConfigError(f"pipeline_parallel_size {pipeline_parallel} must be at least 1 and divide the {world} "
                          f"ranks (stages x data-parallel ranks = ranks); e.g. --pp 1, or launch a multiple of "
                          f"{pipeline_parallel} ranks.")
    dp = world // pipeline_parallel
    if replicate < 1 or dp % replicate:
        stages = f" of each pipeline stage ({world} ranks / {pipeline_parallel} stages)" if pipeline_parallel > 1 \
            else ""
        raise ConfigError(f"data_parallel_replicate_size {replicate} must be at least 1 and divide the {dp} "
                          f"ranks{stages} (HSDP: replicas x shards = ranks); e.g. --data_parallel_replicate_size 1.")
    return MeshShape(replicate, dp // replicate, pipeline_parallel)


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
    """A 1-D ("dp_shard",) mesh, 2-D ("dp_replicate", "dp_shard") for HSDP; "pp" first (outermost) with stages."""
    from torch.distributed.device_mesh import init_device_mesh
    sizes, names = [shape.shard], ["dp_shard"]
    if shape.replicate > 1:
        sizes, names = [shape.replicate] + sizes, ["dp_replicate"] + names
    if shape.pipeline > 1:
        sizes, names = [shape.pipeline] + sizes, ["pp"] + names
    return init_device_mesh(device_type, tuple(sizes), mesh_dim_names=tuple(names))


def data_parallel_mesh(mesh):
    """The (sub)mesh FSDP2 shards over: every dimension but "pp" (a stage's own data-parallel ranks)."""
    names = [n for n in mesh.mesh_dim_names if n in ("dp_replicate", "dp_shard")]
    return mesh if list(mesh.mesh_dim_names) == names else mesh[tuple(names)]


def local_device(device_type: str) -> torch.device:
    if device_type == "cuda":
        index = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")
