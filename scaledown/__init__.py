# ScaleDown: OSCAR-style online soft compression for RAG, trained on one process, DeepSpeed or NeuronX Distributed.
from scaledown.config import ScaleDownConfig
from scaledown.errors import ScaleDownError

__version__ = "0.1.0"


def __getattr__(name):  # the model pulls in transformers/peft: import it only when asked for
    if name == "ScaleDownModel":
        from scaledown.models import ScaleDownModel
        return ScaleDownModel
    raise AttributeError(f"module 'scaledown' has no attribute {name!r}")


__all__ = ["ScaleDownConfig", "ScaleDownModel", "ScaleDownError", "__version__"]
