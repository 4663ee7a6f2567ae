# The file names of NAVER's released OSCAR format (reference/oscar.md §8) and how a folder in it is recognised.
from __future__ import annotations

import json
import os

ADAPTERS = "adapters.pth"                                # PEFT state dicts by adapter name
FIRST_LAST = "decoder_first_last_layers.pth"             # embedding / LM-head rows of the added tokens
COMPRESSOR = os.path.join("compressor", "compressor.pth")
MLP = os.path.join("compressor", "mlp.pth")
TRIMMED = "mistral_trimmed"                              # compr_model_name of an N-layers compressor
TRIMMED_PREFIX = "custom_model.model."                   # its state-dict prefix


def is_released_folder(path: str) -> bool:
    """True for a folder whose config.json is a COCOMConfig (model_type COCOM), or that holds the released format's
    weight files (adapters.pth / decoder_first_last_layers.pth) whatever its config.json: a damaged or missing
    config.json is then reported by the released reader, naming the file, not as "not a model folder"."""
    config = os.path.join(path, "config.json")
    if os.path.isfile(os.path.join(path, "scaledown_config.json")):
        return False
    if any(os.path.isfile(os.path.join(path, name)) for name in (ADAPTERS, FIRST_LAST)):
        return True
    if not os.path.isfile(config):
        return False
    try:
        with open(config) as f:
            values = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(values, dict) and (str(values.get("model_type", "")).lower() == "cocom"
                                         or {"decoder_model_name", "compr_rate"} <= set(values))
