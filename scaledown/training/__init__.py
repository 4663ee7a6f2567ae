# Training: the backend-agnostic loop (ScaleDownTrainer) and its backends (local, deepspeed, neuron).
from scaledown.training.trainer import ScaleDownTrainer, TrainResult

__all__ = ["ScaleDownTrainer", "TrainResult"]
