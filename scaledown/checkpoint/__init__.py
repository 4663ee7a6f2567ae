# Checkpoint readers / writers for DeepSpeed ZeRO-3, Hugging Face and NeuronX Distributed layouts, and `convert`.
from scaledown.checkpoint.convert import FORMATS, ConversionResult, convert

__all__ = ["FORMATS", "ConversionResult", "convert"]
