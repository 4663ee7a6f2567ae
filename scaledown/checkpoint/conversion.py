# Python API of `scaledown convert`: checkpoints between Hugging Face, DeepSpeed ZeRO-3, NxD TP/PP and DCP formats.
"""    from scaledown.checkpoint import convert
    result = convert("hf", "nxd", "runs/tiny/final", "ckpt_nxd", tp=8, pp=4)
    result.path, result.notes      # where it went, what could not be carried

Every conversion reads the source into full tensors (FullCheckpoint) and writes the target. All checks
(formats, flags, divisibility by tp, pp against the layer count, shard completeness, model match) run
before anything is written; outputs appear under their final name only when complete.

What carries what: weights always; Adam moments and the step between DeepSpeed, NxD and DCP (every direction,
any tp/pp/world size); a Hugging Face folder has no optimizer state, so moments are dropped going to HF
and start from zero coming from HF. trainer_state.json (step, phase) follows a training checkpoint, so
`--resume_from` accepts the converted folder. The formats, their readers, writers and options are one table:
checkpoint/formats.py.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Optional

from scaledown.checkpoint import formats as registry
from scaledown.checkpoint.description import describe_checkpoint
from scaledown.checkpoint.folder_protocol import STATE_FILE
from scaledown.checkpoint.full import FullCheckpoint, PendingCheckpoint
from scaledown.checkpoint.oscar_convert import check_oscar_options, convert_oscar
from scaledown.destination import check_destination
from scaledown.errors import CheckpointError, ConfigError

FORMATS = tuple(registry.FORMATS)   # --from / --to values (checkpoint/formats.py: one row per format)
# files of a one-process (local backend) checkpoint (training/backends/local.py), recognised to say what to do
LOCAL_MODEL_FILE, LOCAL_CLIENT_FILE = "model.safetensors", "client_state.pt"


@dataclass
class ConversionResult:
    path: str
    carried: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _check_options(src_format: str, dst_format: str, tag: Optional[str], options: dict) -> None:
    """Formats known; every writer option given (tp, merge_lora, ...) belongs to the --to format's writer (the
    format table says which); --tag only for writers of DST/TAG."""
    for flag, value in (("--from", src_format), ("--to", dst_format)):
        if value not in FORMATS:
            raise ConfigError(f"{flag} {value!r} is not one of {', '.join(FORMATS)}.")
    target = registry.get(dst_format)
    foreign = [name for name, value in options.items() if _given(name, value) and name not in target.options]
    if foreign:
        owners = sorted({f for name in foreign for f in registry.formats_taking(name)})
        flags = ", ".join(registry.flag_of(n) for n in foreign)
        if "merge_lora" in foreign:
            raise ConfigError("--merge_lora only applies to --to hf: DeepSpeed, NxD and DCP checkpoints keep LoRA "
                              "separate so training can continue.")
        raise ConfigError(f"{flags} only appl{'y' if len(foreign) > 1 else 'ies'} to --to {' / '.join(owners)} "
                          f"(the format being written); drop {'them' if len(foreign) > 1 else 'it'} for --to "
                          f"{dst_format}.")
    if tag and not target.tagged:
        raise ConfigError(f"--tag names the checkpoint folder written under DST (--to "
                          f"{' / '.join(n for n, f in registry.FORMATS.items() if f.tagged)}); a "
                          f"{target.what} folder is DST itself. Drop --tag.")
    if options.get("zero1_dp") is not None and options["zero1_dp"] < 1:
        raise ConfigError(f"--zero1_dp {options['zero1_dp']}: give the data-parallel size of the run that will load "
                          f"the checkpoint (world size / (tp x pp)), at least 1.")


def _given(name: str, value) -> bool:
    """Whether a writer option was set on the command (tp / pp default to 1, flags to False / None)."""
    return value != 1 if name in ("tp", "pp") else bool(value) or (value is not None and value is not False)


def _describe(src_format: str, src: str, src_tag: Optional[str], config_file: Optional[str], trust_remote_code: bool):
    """The source's model description, cheaply (no tensors read)."""
    _refuse_one_process_checkpoint(src)
    fmt = registry.get(src_format)
    if fmt.describe:
        return registry.function(fmt.describe)(src, src_tag, config_file, trust_remote_code)
    tag_dir = registry.function(fmt.find_tag)(src, src_tag)
    return describe_checkpoint(tag_dir, config_file, fmt.what, trust_remote_code)[0]


def _refuse_one_process_checkpoint(src: str) -> None:
    """A one-process (local backend) training checkpoint is resumed by that backend; the model it holds is
    converted from the run's OUTPUT_DIR/final, which every training run writes."""
    folders = [src] + ([os.path.join(src, n) for n in sorted(os.listdir(src))] if os.path.isdir(src) else [])
    if any(os.path.isfile(os.path.join(f, LOCAL_MODEL_FILE)) and os.path.isfile(os.path.join(f, LOCAL_CLIENT_FILE))
           for f in folders):
        raise CheckpointError(f"{src} is a one-process (local backend) training checkpoint; `scaledown convert` reads "
                              f"Hugging Face folders (--from hf: a run's OUTPUT_DIR/final), DeepSpeed and NxD "
                              f"checkpoints. Convert the run's OUTPUT_DIR/final instead, or resume this checkpoint "
                              f"with `python train.py --resume_from {src}` (same --output_dir) and convert its final/.")


def convert(src_format: str, dst_format: str, src: str, dst: str, *, tp: int = 1, pp: int = 1,
            kv_replication: Optional[int] = None, xser: bool = False, merge_lora: bool = False,
            tag: Optional[str] = None, src_tag: Optional[str] = None, config_file: Optional[str] = None,
            log: Optional[Callable[[str], None]] = None, generator_path: Optional[str] = None,
            compressor_path: Optional[str] = None, zero1_dp: Optional[int] = None, trust_remote_code: bool = False,
            overwrite: bool = False, released_names: Optional[dict] = None) -> ConversionResult:
    """Convert SRC (format src_format) into DST (format dst_format); see the module docstring.

    `trust_remote_code`: let the models this conversion loads run their own code (a value saved in SRC is ignored).
    `overwrite`: replace what DST already holds (otherwise ConfigError before anything is read).
    `released_names`: --to oscar, {"decoder_model_name": ..., "compr_model_name": ...} written in config.json.
    """
    log = log or (lambda message: None)
    options = {"tp": tp, "pp": pp, "kv_replication": kv_replication, "xser": xser, "zero1_dp": zero1_dp,
               "merge_lora": merge_lora}
    _check_options(src_format, dst_format, tag, options)
    check_oscar_options(src_format, dst_format, generator_path, compressor_path, released_names)
    if "oscar" in (src_format, dst_format):
        check_destination(dst, overwrite, "DST")
        return ConversionResult(*convert_oscar(src_format, dst_format, src, dst, generator_path, compressor_path, log,
                                                  released_names))
    if os.path.abspath(src) == os.path.abspath(dst) and src_format == dst_format and not tag:
        raise ConfigError(f"SRC and DST are the same folder ({src}); write to another folder (or another --tag).")
    _check_destination(src_format, dst_format, src, src_tag, dst, tag, overwrite)
    description = _describe(src_format, src, src_tag, config_file, trust_remote_code)
    target = registry.get(dst_format)
    mine = {name: options[name] for name in target.options}
    reader = registry.function(registry.get(src_format).read)

    def read() -> FullCheckpoint:
        log(f"reading {src_format} checkpoint {src}")
        loaded = reader(src, src_tag, config_file, trust_remote_code)
        log(f"writing {dst_format} checkpoint {dst}")
        return loaded

    # a writer that reads late (nxd) refuses tp / pp / heads problems on the description before any tensor is read
    source = PendingCheckpoint(description, read) if target.reads_late else read()
    extra = {"tag": tag} if target.tagged else {}
    path = registry.function(target.write)(source, dst, overwrite=overwrite, **extra, **mine)
    ckpt = source.load() if target.reads_late else source
    carried = ["weights"]
    if ckpt.optimizer and ckpt.optimizer.moments and target.tagged:
        carried.append(f"Adam moments and step ({ckpt.optimizer.step})")
    if ckpt.trainer_state and target.tagged:
        carried.append(STATE_FILE)
    return ConversionResult(path, carried, list(dict.fromkeys(ckpt.notes)))


def _check_destination(src_format: str, dst_format: str, src: str, src_tag: Optional[str], dst: str,
                       tag: Optional[str], overwrite: bool) -> None:
    """Refuse, before anything is read, to replace what DST holds: the whole folder for hf, DST/TAG for the tagged
    formats (a default tag comes from the source's step and is checked again by the writer)."""
    if not registry.get(dst_format).tagged:
        check_destination(dst, overwrite, "DST")
    elif tag:
        check_destination(os.path.join(dst, tag), overwrite, "DST/--tag")
