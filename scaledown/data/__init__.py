# Data: ScaleDownDataset (validated rows), the collator, the built-in synthetic task, prepare_dataset.
# The dataset and collator load on first use (PEP 562): the command line imports scaledown.data's light modules (the
# synthetic corpus writer, prepare-data's defaults) to parse flags, and a bad flag must be named before torch loads.
__all__ = ["ScaleDownDataset", "ScaleDownCollator"]


def __getattr__(name):
    if name == "ScaleDownDataset":
        from scaledown.data.dataset import ScaleDownDataset
        return ScaleDownDataset
    if name == "ScaleDownCollator":
        from scaledown.data.collator import ScaleDownCollator
        return ScaleDownCollator
    raise AttributeError(f"module 'scaledown.data' has no attribute {name!r}")
