# Data: ScaleDownDataset (validated rows), the collator, the built-in synthetic task, prepare_dataset.
from scaledown.data.collator import ScaleDownCollator
from scaledown.data.dataset import ScaleDownDataset

__all__ = ["ScaleDownDataset", "ScaleDownCollator"]
