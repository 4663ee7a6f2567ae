# File names of NAVER's released OSCAR layout (reference/oscar.md §8), shared by its reader, builder and writer.
import os

ADAPTERS = "adapters.pth"                                # PEFT state dicts by adapter name
FIRST_LAST = "decoder_first_last_layers.pth"             # embedding / LM-head rows of the added tokens
COMPRESSOR = os.path.join("compressor", "compressor.pth")
MLP = os.path.join("compressor", "mlp.pth")
TRIMMED = "mistral_trimmed"                              # compr_model_name of an N-layers compressor
TRIMMED_PREFIX = "custom_model.model."                   # its state-dict prefix
