# Training: the backend-agnostic loop (ScaleDownTrainer) and its backends (local, deepspeed, neuron, torch).
# The loop loads on first use (PEP 562): the command line imports scaledown.training.backends (the backends' flag
# tables) to parse flags, and a bad flag must be named before torch loads.
__all__ = ["ScaleDownTrainer", "TrainResult"]


def __getattr__(name):
    if name in __all__:
        from scaledown.training import trainer
        return getattr(trainer, name)
    raise AttributeError(f"module 'scaledown.training' has no attribute {name!r}")
