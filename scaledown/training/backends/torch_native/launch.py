# The torch backend's launch side: how `scaledown train --backend torch` / launchers/train_torch.py build it.
from __future__ import annotations

from scaledown.training.backends.neuron.launch import model_description

LAUNCHER = "launchers/train_torch.py"
DESCRIPTION = ("Train ScaleDown with the PyTorch-native backend: FSDP2 (fully_shard) data parallelism on a "
               "DeviceMesh, HSDP with --data_parallel_replicate_size, DTensor tensor parallel with --tp (the plan "
               "NxD uses), pipeline stages with --pp, DCP checkpoints. Launch with `torchrun "
               "--nproc_per_node N` (CPU ranks: gloo; GPUs: NCCL), `sbatch slurm/train_gpu.sh --backend torch`, "
               "or plain `python` for one rank. --batch_size is the global batch.")


def build_torch(config, run):
    from scaledown.training.backends.torch_native.backend import TorchBackend
    return TorchBackend(config)


def check(run, env) -> None:
    """The mesh and tensor-parallel refusals for the world the launcher started, before any data or model is built:
    first what the model cannot shard at --tp or split into --pp stages (read from a meta skeleton: no weights),
    then the mesh factors."""
    # the architecture a run builds (--init_from folders included): the NxD launch side's one function
    from scaledown.training.backends.torch_native.mesh import mesh_shape
    from scaledown.training.backends.torch_native.tensor_parallel import check_before_build
    config = run.config
    if config.device_type == "neuron":
        from scaledown.training.backends.torch_native.mesh import check_torch_neuron
        check_torch_neuron()
    check_before_build(config, lambda: model_description(config, run.init_from, **run.options))
    if config.pipeline_parallel_size > 1:
        from scaledown.training.backends.torch_native.pipeline_schedule import check_pipeline_config
        check_pipeline_config(config)
    mesh_shape(int(env.get("WORLD_SIZE") or 1), config.data_parallel_replicate_size, config.tensor_parallel_size,
               config.pipeline_parallel_size)
