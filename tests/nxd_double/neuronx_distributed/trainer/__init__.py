# TEST DOUBLE of neuronx_distributed.trainer.
from .checkpoint import load_checkpoint, save_checkpoint  # noqa: F401
from .trainer import initialize_parallel_model, initialize_parallel_optimizer, neuronx_distributed_config  # noqa: F401
