# TEST DOUBLE of neuronx_distributed.pipeline.
from .model import NxDPPModel  # noqa: F401
from .partition import create_partitions  # noqa: F401
