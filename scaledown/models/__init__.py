# Model definition: pure torch + transformers + peft (no parallel backend is imported here).
from scaledown.models.compressor import Compressor
from scaledown.models.scaledown_model import CompressedDocuments, ScaleDownModel, ScaleDownOutput

__all__ = ["Compressor", "CompressedDocuments", "ScaleDownModel", "ScaleDownOutput"]
