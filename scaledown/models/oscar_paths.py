# A released OSCAR folder's base models: the names its config.json gives, or the local folders the user passes.
"""A released config.json names its base models by hub id (decoder_model_name, compr_model_name or, for an
N-layers compressor, compr_base_model_name). Offline, or with the weights already on disk, the user gives local
folders instead. train (--init_from), eval (--model, several), bench latency (--model) and convert (--from oscar)
take the same two flags (defined once in cli/oscar_base_flags.py); each applies to every released folder the
command reads (ScaleDown folders record their own base paths and ignore them).
"""
from __future__ import annotations

import os
from typing import Any, Optional

from scaledown.errors import ConfigError
from scaledown.models import loading
from scaledown.models.oscar_files import TRIMMED

GENERATOR_FLAG = "--generator_path"
COMPRESSOR_FLAG = "--compressor_path"


def base_names(cfg: dict[str, Any], generator_path: Optional[str] = None,
               compressor_path: Optional[str] = None) -> tuple[str, str, str]:
    """(generator name, compressor name, config.json field the compressor name came from) of a released config."""
    generator = generator_path or cfg["decoder_model_name"]
    if compressor_path:
        return generator, compressor_path, COMPRESSOR_FLAG
    if cfg["compr_model_name"] == TRIMMED:   # N-layers: the generator's own first layers
        same = cfg.get("compr_base_model_name") in (None, cfg["decoder_model_name"])
        return generator, (generator if same else cfg["compr_base_model_name"]), "compr_base_model_name"
    return generator, cfg["compr_model_name"], "compr_model_name"


def check_base_models(folder: str, cfg: dict[str, Any], generator_path: Optional[str] = None,
                      compressor_path: Optional[str] = None) -> tuple[str, str]:
    """Resolve the base generator and compressor of a released folder (their configs only: cheap), before any
    weights load. Raises ConfigError naming the config.json field and the flag that gives a local folder."""
    generator, compressor, field = base_names(cfg, generator_path, compressor_path)
    config_json = os.path.join(folder, "config.json")
    for role, name, given, source, flag in (
            ("generator", generator, generator_path, "decoder_model_name", GENERATOR_FLAG),
            ("compressor's base model", compressor, compressor_path if field == COMPRESSOR_FLAG else None, field,
             COMPRESSOR_FLAG)):
        try:
            loading.model_config(name)
        except ConfigError as exc:
            why = str(exc).split(". ")[0]
            if given:
                raise ConfigError(f"{flag} {given}: the {role} of released OSCAR folder {folder} cannot be loaded "
                                  f"from there ({why}). Pass a folder holding the model's config.json, weights and "
                                  f"tokenizer.") from None
            raise ConfigError(f"{config_json} names the {role} '{name}' ({source}), which cannot be loaded here "
                              f"({why}). Pass a local copy of it with {flag} DIR (Python: "
                              f"{flag[2:]}=DIR).") from None
    return generator, compressor
