# TEST DOUBLE of neuronx_distributed.parallel_layers.
from . import loss_functions, mappings, parallel_state  # noqa: F401
from .layers import ColumnParallelLinear, ParallelEmbedding, RowParallelLinear  # noqa: F401
from .loss_functions import parallel_cross_entropy  # noqa: F401
from .mappings import (copy_to_tensor_model_parallel_region, gather_from_tensor_model_parallel_region,  # noqa: F401
                       reduce_from_tensor_model_parallel_region)

# what NxD's tracer keeps out of pipeline traces (the double implements these two mappings only)
PARALLEL_MODULES = [ColumnParallelLinear, RowParallelLinear, ParallelEmbedding]
PARALLEL_FUNCTIONS = [parallel_cross_entropy, copy_to_tensor_model_parallel_region,
                      reduce_from_tensor_model_parallel_region]
