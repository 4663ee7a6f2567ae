# TEST DOUBLE of neuronx_distributed 0.17 (see tests/nxd_double/__init__.py): the trainer API at the top level.
__version__ = "0.17.0"

from . import parallel_layers, pipeline  # noqa: E402,F401
from .trainer import (initialize_parallel_model, initialize_parallel_optimizer, load_checkpoint,  # noqa: E402,F401
                      neuronx_distributed_config, save_checkpoint)
