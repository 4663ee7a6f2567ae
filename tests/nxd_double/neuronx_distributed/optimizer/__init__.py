# TEST DOUBLE of neuronx_distributed.optimizer.
from .zero_redundancy_optimizer import NeuronZero1Optimizer  # noqa: F401
