# `scaledown convert --from oscar` / `--to oscar`: released OSCAR folders <-> ScaleDown (hf) folders.
from __future__ import annotations

from typing import Callable, Optional

from scaledown.checkpoint.oscar_export import write_released
from scaledown.errors import CheckpointError, ConfigError
from scaledown.models import ScaleDownModel
from scaledown.models.oscar_format import is_released_folder, load_released


def check_oscar_options(src_format: str, dst_format: str, generator_path: Optional[str],
                        compressor_path: Optional[str], released_names: Optional[dict] = None) -> None:
    named = [f"--{k}" for k, v in (released_names or {}).items() if v]
    if named and dst_format != "oscar":
        raise ConfigError(f"{' / '.join(named)} name the base models in the config.json that --to oscar writes; drop "
                          f"them for --to {dst_format}.")
    if "oscar" not in (src_format, dst_format):
        if generator_path or compressor_path:
            raise ConfigError("--generator_path / --compressor_path only apply to --from oscar or --to oscar (the "
                              "base models a released OSCAR folder names); drop them.")
        return
    other = dst_format if src_format == "oscar" else src_format
    if other != "hf":
        raise ConfigError(f"--from {src_format} --to {dst_format}: a released OSCAR folder converts to and from a "
                          f"ScaleDown (hf) folder only. Convert in two steps through --to hf / --from hf.")
    if compressor_path and dst_format == "oscar":
        raise ConfigError("--compressor_path applies to --from oscar (where to find the compressor's base model); "
                          "for --to oscar the compressor name comes from the ScaleDown model.")


def convert_oscar(src_format: str, dst_format: str, src: str, dst: str, generator_path: Optional[str] = None,
                  compressor_path: Optional[str] = None, log: Optional[Callable[[str], None]] = None,
                  released_names: Optional[dict] = None):
    """oscar -> hf: read natively and save_pretrained; hf -> oscar: from_pretrained and write the released files."""
    log = log or (lambda message: None)
    if src_format == "oscar":
        if not is_released_folder(src):
            raise CheckpointError(f"{src} is not a released OSCAR folder: it needs a config.json with the COCOMConfig "
                                  f"fields (model_type COCOM, decoder_model_name, compr_rate, ...).")
        log(f"reading released OSCAR folder {src}")
        model = load_released(ScaleDownModel, src, generator_path=generator_path, compressor_path=compressor_path)
        log(f"writing hf folder {dst}")
        model.save_pretrained(dst)
        return dst, ["weights", "prompt format (prompt_format='oscar')"], []
    log(f"reading hf folder {src}")
    model = ScaleDownModel.from_pretrained(src)
    log(f"writing released OSCAR folder {dst}")
    notes = write_released(model, dst, generator_name=generator_path, overwrite=True,   # convert checked DST
                           **{k: v for k, v in (released_names or {}).items() if v})
    return dst, ["weights"], notes
