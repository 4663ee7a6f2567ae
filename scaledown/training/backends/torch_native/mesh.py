# The PyTorch-native backend's device mesh: pipeline stages x data-parallel replicas x shards x tensor parallel.
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

from scaledown.errors import ConfigError
from scaledown.training.backends.distributed_env import free_port


@dataclass(frozen=True)
class MeshShape:
    """world = pipeline x replicate x shard x tp, in that (row-major) order: "pp" outermost, "tp" innermost so a TP
    group stays inside a node (torchtitan's order).

    shard: ranks one FSDP2 group splits every weight over; replicate: copies of those groups (HSDP: sharded within
    a node, replicated across nodes); replicate and shard are data parallel, dp_size = replicate x shard, and the tp
    ranks of one data-parallel rank read the same micro-batches. tp: ranks one DTensor tensor-parallel group splits
    each projection over. pipeline: stages (torch.distributed.pipelining), each with its own FSDP2 (and TP) groups."""
    replicate: int
    shard: int
    tp: int = 1
    pipeline: int = 1

    @property
    def dp(self) -> int:
        return self.replicate * self.shard

    @property
    def world(self) -> int:
        return self.pipeline * self.dp * self.tp

    def describe(self) -> str:
        if self.replicate == 1:
            text = f"FSDP2 over {self.shard} rank{'s' if self.shard != 1 else ''}"
        else:
            text = f"HSDP: {self.replicate} replicas x {self.shard} shards"
        if self.tp > 1:
            stages = f"{self.pipeline} stages x " if self.pipeline > 1 else ""
            text += f" x tensor parallel {self.tp} (world {self.world} = {stages}data-parallel {self.dp} x tp " \
                    f"{self.tp})"
        return text if self.pipeline == 1 else f"{self.pipeline} pipeline stages x {text}"


def mesh_shape(world: int, replicate: int, tensor_parallel: int, pipeline_parallel: int) -> MeshShape:
    """The mesh for `world` ranks; raises ConfigError naming the factor and the fix before anything is built.

    Any of the factors may combine: pipeline stages x data-parallel ranks x tensor parallel (3-D with --pp and --tp,
    4-D with HSDP too); the stages split the world first, tp then divides each stage's ranks."""
    if pipeline_parallel < 1 or world % pipeline_parallel:
        raise ConfigError(f"pipeline_parallel_size {pipeline_parallel} must be at least 1 and divide the {world} "
                          f"ranks (stages x data-parallel ranks = ranks); e.g. --pp 1, or launch a multiple of "
                          f"{max(pipeline_parallel, 1)} ranks.")
    stage = world // pipeline_parallel   # ranks per stage: tp must divide these, not only the world
    if tensor_parallel < 1 or stage % tensor_parallel:
        divisors = [d for d in range(1, stage + 1) if stage % d == 0]
        ranks = (f"{world} ranks" if pipeline_parallel == 1 else
                 f"{stage} ranks of each pipeline stage ({world} ranks / {pipeline_parallel} stages)")
        raise ConfigError(f"tensor_parallel_size {tensor_parallel} must be at least 1 and divide the {ranks} "
                          f"(ranks = data-parallel x tensor-parallel); with {stage} ranks"
                          f"{' per stage' if pipeline_parallel > 1 else ''} use --tp "
                          f"{' / '.join(map(str, divisors))}, or launch a multiple of "
                          f"{max(tensor_parallel, 1) * pipeline_parallel} ranks.")
    dp = stage // tensor_parallel
    if replicate < 1 or dp % replicate:
        if pipeline_parallel > 1:
            where = f"ranks of each pipeline stage ({world} ranks / {pipeline_parallel} stages"
            where = "data-parallel " + where + f" / tp {tensor_parallel})" if tensor_parallel > 1 else where + ")"
        elif tensor_parallel > 1:
            where = f"data-parallel ranks ({world} ranks / tp {tensor_parallel})"
        else:
            where = "data-parallel ranks"
        raise ConfigError(f"data_parallel_replicate_size {replicate} must be at least 1 and divide the {dp} {where} "
                          f"(HSDP: replicas x shards = data-parallel ranks); e.g. --data_parallel_replicate_size 1.")
    return MeshShape(replicate, dp // replicate, tensor_parallel, pipeline_parallel)


def init_process_group(device_type: str, timeout_s: float) -> None:
    """gloo on CPU; on GPUs NCCL for device tensors and gloo for host tensors (the loop's counts and flags)."""
    if dist.is_initialized():
        return
    if "RANK" not in os.environ:   # one process without a launcher
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=os.environ.get("MASTER_PORT") or str(free_port()))
    # host tensors (the loop's counts and flags) always over gloo; device tensors over the device's own backend
    backend = {"cuda": "cpu:gloo,cuda:nccl", "neuron": "cpu:gloo,neuron:neuron"}.get(device_type, "gloo")
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))


def build_mesh(shape: MeshShape, device_type: str):
    """Dims ("pp"?, "dp_replicate"?, "dp_shard", "tp"?): "pp" only with stages, "dp_replicate" only for HSDP, "tp"
    only with tensor parallel (row-major: pp outermost, tp innermost)."""
    sizes, names = [shape.shard], ["dp_shard"]
    if shape.replicate > 1:
        sizes, names = [shape.replicate] + sizes, ["dp_replicate"] + names
    if shape.pipeline > 1:
        sizes, names = [shape.pipeline] + sizes, ["pp"] + names
    if shape.tp > 1:
        sizes, names = sizes + [shape.tp], names + ["tp"]
    return init_device_mesh(device_type, tuple(sizes), mesh_dim_names=tuple(names))


def data_parallel_mesh(mesh):
    """The (sub)mesh FSDP2 shards over: the "dp_replicate" / "dp_shard" dims (a stage's own data-parallel ranks,
    without the tp ranks)."""
    names = [n for n in mesh.mesh_dim_names if n in ("dp_replicate", "dp_shard")]
    return mesh if list(mesh.mesh_dim_names) == names else mesh[tuple(names)]


def data_parallel_rank(mesh, shape: MeshShape) -> int:
    """This rank's index among the data-parallel ranks (the sampler's share): its (replicate, shard) coordinate,
    the same for every tp rank and every pipeline stage of one data-parallel rank."""
    coordinate = dict(zip(mesh.mesh_dim_names, mesh.get_coordinate()))
    return coordinate.get("dp_replicate", 0) * shape.shard + coordinate["dp_shard"]


def check_torch_neuron() -> None:
    """--device neuron needs TorchNeuron (torch-neuronx 2.13.3+, which registers torch.neuron and the "neuron" c10d
    backend; Neuron SDK 2.33, Trn2/Trn3). Written against its documented API; not run on Neuron hardware."""
    if not hasattr(torch, "neuron"):
        raise ConfigError(f"--device neuron needs TorchNeuron (torch-neuronx 2.13.3 or later for torch "
                          f"{torch.__version__.split('+')[0]}, Neuron SDK 2.33, on a Trn2 or Trn3 instance); "
                          f"torch.neuron is not available here. Install it there, or use --device cpu / gpu (on Trn1: "
                          f"--device trainium, the NxD backend).")


def local_device(device_type: str) -> torch.device:
    """This rank's device: cuda:LOCAL_RANK / neuron:LOCAL_RANK (one NeuronCore per rank, TorchNeuron) / cpu."""
    index = int(os.environ.get("LOCAL_RANK", 0))
    if device_type == "cuda":
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if device_type == "neuron":
        torch.accelerator.set_device_index(index)   # device-generic API (TorchNeuron registers PrivateUse1 "neuron")
        return torch.device("neuron", index)
    return torch.device("cpu")
