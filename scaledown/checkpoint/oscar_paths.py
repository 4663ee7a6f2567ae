# --generator_path / --compressor_path: one definition for every command that reads a released OSCAR folder.
"""A released config.json names its base models by hub id (decoder_model_name, compr_model_name or, for an
N-layers compressor, compr_base_model_name). Offline, or with the weights already on disk, the user gives local
folders instead. train (--init_from), eval (--model, several), bench latency (--model) and convert (--from oscar)
take the same two flags; each applies to every released folder the command reads (ScaleDown folders record their
own base paths and ignore them).
"""
from __future__ import annotations

import os
from typing import Any, Optional

from scaledown.errors import ConfigError

GENERATOR_FLAG = "--generator_path"
COMPRESSOR_FLAG = "--compressor_path"


def add_base_model_flags(parser, generator_help: Optional[str] = None) -> None:
    """Add --generator_path / --compressor_path (dest generator_path / compressor_path) to `parser` (or a group)."""
    parser.add_argument("--generator_path", "--generator-path", metavar="DIR", default=None,
                        help=generator_help or "released OSCAR folder (naver/oscar-* layout): local folder of the base "
                             "generator, instead of the hub id in its config.json (decoder_model_name)")
    parser.add_argument("--compressor_path", "--compressor-path", metavar="DIR", default=None,
                        help="released OSCAR folder: local folder of the compressor's base model, instead of the hub "
                             "id in its config.json (compr_model_name; compr_base_model_name for an N-layers "
                             "compressor)")


def base_paths(folder: str, args: Any) -> dict[str, Optional[str]]:
    """{generator_path, compressor_path} to pass to from_pretrained for `folder`: the flags' values when it is a
    released folder, {} otherwise (a ScaleDown folder takes no such arguments)."""
    from scaledown.checkpoint.oscar_files import is_released_folder
    if not is_released_folder(folder):
        return {}
    return {"generator_path": getattr(args, "generator_path", None),
            "compressor_path": getattr(args, "compressor_path", None)}


def check_flags_apply(folders, args: Any, model_flag: str) -> None:
    """--generator_path / --compressor_path given, but no released folder among `folders`: an error, not ignored."""
    from scaledown.checkpoint.oscar_files import is_released_folder
    given = [flag for flag in (GENERATOR_FLAG, COMPRESSOR_FLAG) if getattr(args, flag[2:], None)]
    if given and not any(folder and is_released_folder(folder) for folder in folders):
        raise ConfigError(f"{' / '.join(given)} only appl{'y' if len(given) > 1 else 'ies'} to a released OSCAR folder (naver/oscar-* layout, whose "
                          f"config.json names its base models by hub id); {model_flag} names none. Drop "
                          f"{' / '.join(given)} (a ScaleDown folder records its own base models).")


def base_names(cfg: dict[str, Any], generator_path: Optional[str] = None,
               compressor_path: Optional[str] = None) -> tuple[str, str, str]:
    """(generator name, compressor name, config.json field the compressor name came from) of a released config."""
    from scaledown.checkpoint.oscar_files import TRIMMED
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
    from scaledown.models import loading
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
