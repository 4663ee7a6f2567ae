# The architecture of a released OSCAR folder as a ModelDescription (NxD plans, shards and exports from it).
from __future__ import annotations

from typing import Optional

from scaledown.checkpoint.description import ModelDescription
from scaledown.models import loading
from scaledown.models.compressor_builders import truncated_config
from scaledown.models.oscar_files import TRIMMED
from scaledown.models.oscar_format import read_released_config, released_tokenizers
from scaledown.models.oscar_paths import check_base_models


def released_description(folder: str, config, generator_path: Optional[str] = None,
                         compressor_path: Optional[str] = None) -> ModelDescription:
    """What `load_released` builds, without reading a tensor: `config` (a run's config whose model settings are the
    folder's, cli/training_run.init_architecture), the base HF configs with the vocabularies grown by the added
    tokens (generator: <MEM..>, <AE>, <ENC>, <SEP>; compressor backbone: <MEM0>..), and those grown tokenizers.
    Raises CheckpointError / ConfigError as read_released_config and check_base_models do."""
    cfg = read_released_config(folder)
    generator_name, compressor_name = check_base_models(folder, cfg, generator_path, compressor_path)
    tokenizer, _, _, compressor_tokenizer, _ = released_tokenizers(cfg, generator_name, compressor_name)
    generator = loading.model_config(generator_name)
    trimmed = cfg["compr_model_name"] == TRIMMED
    backbone = truncated_config(generator, cfg["compr_n_layers"]) if trimmed else loading.model_config(compressor_name)
    generator, backbone = generator.to_dict(), backbone.to_dict()
    generator["vocab_size"], backbone["vocab_size"] = len(tokenizer), len(compressor_tokenizer)
    return ModelDescription(config, generator, backbone,
                            tokenizers=(tokenizer, None if trimmed else compressor_tokenizer))
