# Checkpoint readers / writers for DeepSpeed ZeRO-3, Hugging Face, NeuronX Distributed and DCP formats, and `convert`.
# `convert` (conversion.py) loads on first use (PEP 562): the command line imports scaledown.checkpoint's light modules
# (the folder protocol, the format table) to parse flags, and a bad flag must be named before torch loads.
__all__ = ["FORMATS", "ConversionResult", "convert"]


def __getattr__(name):
    if name in __all__:
        from scaledown.checkpoint import conversion
        return getattr(conversion, name)
    raise AttributeError(f"module 'scaledown.checkpoint' has no attribute {name!r}")
