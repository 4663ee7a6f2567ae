# --generator_path / --compressor_path: one definition for every command that reads a released OSCAR folder
# (train --init_from, eval --model, bench latency --model, convert --from oscar). What they resolve to is
# models/oscar_paths.py's.
from __future__ import annotations

from typing import Any, Optional

from scaledown.errors import ConfigError

# the flags' names, as models/oscar_paths.py's messages print them; importing that here would load torch on --help
GENERATOR_FLAG = "--generator_path"
COMPRESSOR_FLAG = "--compressor_path"


def add_base_model_flags(parser, generator_help: Optional[str] = None) -> None:
    """Add --generator_path / --compressor_path (dest generator_path / compressor_path) to `parser` (or a group)."""
    parser.add_argument("--generator_path", "--generator-path", metavar="DIR", default=None,
                        help=generator_help or "released OSCAR folder (naver/oscar-* format): local folder of the base "
                             "generator, instead of the hub id in its config.json (decoder_model_name)")
    parser.add_argument("--compressor_path", "--compressor-path", metavar="DIR", default=None,
                        help="released OSCAR folder: local folder of the compressor's base model, instead of the hub "
                             "id in its config.json (compr_model_name; compr_base_model_name for an N-layers "
                             "compressor)")


def base_paths(folder: str, args: Any) -> dict[str, Optional[str]]:
    """{generator_path, compressor_path} to pass to from_pretrained for `folder`: the flags' values when it is a
    released folder, {} otherwise (a ScaleDown folder takes no such arguments)."""
    from scaledown.models.oscar_files import is_released_folder
    if not is_released_folder(folder):
        return {}
    return {"generator_path": getattr(args, "generator_path", None),
            "compressor_path": getattr(args, "compressor_path", None)}


def check_flags_apply(folders, args: Any, model_flag: str) -> None:
    """--generator_path / --compressor_path given, but no released folder among `folders`: an error, not ignored."""
    from scaledown.models.oscar_files import is_released_folder
    given = [flag for flag in (GENERATOR_FLAG, COMPRESSOR_FLAG) if getattr(args, flag[2:], None)]
    if given and not any(folder and is_released_folder(folder) for folder in folders):
        raise ConfigError(f"{' / '.join(given)} only appl{'y' if len(given) > 1 else 'ies'} to a released OSCAR folder (naver/oscar-* format, whose "
                          f"config.json names its base models by hub id); {model_flag} names none. Drop "
                          f"{' / '.join(given)} (a ScaleDown folder records its own base models).")
