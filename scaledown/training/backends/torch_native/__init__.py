# The PyTorch-native backend: FSDP2 (fully_shard) data parallelism on a DeviceMesh, DCP checkpoints.
from scaledown.training.backends.torch_native.backend import TorchBackend

__all__ = ["TorchBackend"]
