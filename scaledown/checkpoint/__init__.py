# Checkpoint readers / writers for DeepSpeed ZeRO-3, Hugging Face, NeuronX Distributed and DCP formats, and `convert`.
# `convert` loads on first use (PEP 562): the command line imports scaledown.checkpoint's light modules (the folder
# protocol, the format table) to parse flags, and a bad flag must be named before torch loads.
import sys

__all__ = ["FORMATS", "ConversionResult", "convert"]


def __getattr__(name):
    if name in __all__:
        import scaledown.checkpoint.convert
        # loading the submodule bound `convert` here to the module: the package exports the function, as it always did
        conversion = sys.modules["scaledown.checkpoint.convert"]
        globals().update({export: getattr(conversion, export) for export in __all__})
        return globals()[name]
    raise AttributeError(f"module 'scaledown.checkpoint' has no attribute {name!r}")
