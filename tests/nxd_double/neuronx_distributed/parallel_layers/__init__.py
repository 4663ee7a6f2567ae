# TEST DOUBLE of neuronx_distributed.parallel_layers.
from . import loss_functions, mappings, parallel_state  # noqa: F401
from .layers import ColumnParallelLinear, ParallelEmbedding, RowParallelLinear  # noqa: F401
from .loss_functions import parallel_cross_entropy  # noqa: F401
