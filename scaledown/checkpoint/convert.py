# Python API of `scaledown convert`: checkpoints between DeepSpeed ZeRO-3, Hugging Face and NxD TP/PP layouts.
"""    from scaledown.checkpoint import convert
    result = convert("hf", "nxd", "runs/tiny/final", "ckpt_nxd", tp=8, pp=4)
    result.path, result.notes      # where it went, what could not be carried

Every conversion reads the source into full tensors (FullCheckpoint) and writes the target. All checks
(formats, flags, divisibility by tp, pp against the layer count, shard completeness, model match) run
before anything is written; outputs appear under their final name only when complete.

What carries what: weights always; Adam moments and the step between DeepSpeed and NxD (both directions,
any tp/pp/world size); a Hugging Face folder has no optimizer state, so moments are dropped going to HF
and start from zero coming from HF. trainer_state.json (step, phase) follows a training checkpoint, so
`--resume_from` accepts the converted folder.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Optional

from scaledown.checkpoint.folder_protocol import STATE_FILE
from scaledown.errors import CheckpointError, ConfigError

FORMATS = ("deepspeed", "hf", "nxd", "oscar")   # oscar: NAVER's released layout (hf <-> oscar only)
# files of a one-process (local backend) checkpoint (training/backends/local.py), recognised to say what to do
LOCAL_MODEL_FILE, LOCAL_CLIENT_FILE = "model.safetensors", "client_state.pt"


@dataclass
class ConversionResult:
    path: str
    carried: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _check_options(src_format: str, dst_format: str, tp: int, pp: int, kv_replication: Optional[int], xser: bool,
                   merge_lora: bool, tag: Optional[str], zero1_dp: Optional[int] = None) -> None:
    for flag, value in (("--from", src_format), ("--to", dst_format)):
        if value not in FORMATS:
            raise ConfigError(f"{flag} {value!r} is not one of {', '.join(FORMATS)}.")
    nxd_only = [name for name, used in (("--tp", tp != 1), ("--pp", pp != 1), ("--kv_replication", kv_replication),
                                        ("--xser", xser), ("--zero1_dp", zero1_dp)) if used]
    if nxd_only and dst_format != "nxd":
        raise ConfigError(f"{', '.join(nxd_only)} only appl{'y' if len(nxd_only) > 1 else 'ies'} to --to nxd (the "
                          f"layout being written); "
                          f"drop them for --to {dst_format}.")
    if tag and dst_format == "hf":
        raise ConfigError("--tag names the checkpoint folder written for --to nxd / deepspeed; a Hugging Face "
                          "folder is DST itself. Drop --tag.")
    if merge_lora and dst_format != "hf":
        raise ConfigError("--merge_lora only applies to --to hf: DeepSpeed and NxD checkpoints keep LoRA separate "
                          "so training can continue.")
    if zero1_dp is not None and zero1_dp < 1:
        raise ConfigError(f"--zero1_dp {zero1_dp}: give the data-parallel size of the run that will load the "
                          f"checkpoint (world size / (tp x pp)), at least 1.")


def _describe(src_format: str, src: str, src_tag: Optional[str], config_file: Optional[str], trust_remote_code: bool):
    """The source's model description, cheaply (no tensors read)."""
    from scaledown.checkpoint import deepspeed_read, nxd_files
    _refuse_one_process_checkpoint(src)
    from scaledown.checkpoint.description import ModelDescription, describe_checkpoint
    from scaledown.checkpoint.hf_format import describe_folder
    if src_format == "hf":
        directory, description = describe_folder(src, trust_remote_code)
        if config_file:
            from scaledown.config import ScaleDownConfig
            given = ScaleDownConfig.from_file(config_file, trust_remote_code=trust_remote_code)
            description.check_same(ModelDescription.from_config(given),
                                   directory, f"--config {config_file}")
        return description
    tag_dir = (nxd_files.find_tag if src_format == "nxd" else deepspeed_read.find_tag)(src, src_tag)
    return describe_checkpoint(tag_dir, config_file, src_format, trust_remote_code)[0]


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
            overwrite: bool = False) -> ConversionResult:
    """Convert SRC (format src_format) into DST (format dst_format); see the module docstring.

    `trust_remote_code`: let the models this conversion loads run their own code (a value saved in SRC is ignored).
    `overwrite`: replace what DST already holds (otherwise ConfigError before anything is read).
    """
    from scaledown.checkpoint.oscar_convert import check_oscar_options, convert_oscar
    log = log or (lambda message: None)
    _check_options(src_format, dst_format, tp, pp, kv_replication, xser, merge_lora, tag, zero1_dp)
    check_oscar_options(src_format, dst_format, generator_path, compressor_path)
    if "oscar" in (src_format, dst_format):
        from scaledown.destination import check_destination
        check_destination(dst, overwrite, "DST")
        return ConversionResult(*convert_oscar(src_format, dst_format, src, dst, generator_path, compressor_path, log))
    if os.path.abspath(src) == os.path.abspath(dst) and src_format == dst_format and not tag:
        raise ConfigError(f"SRC and DST are the same folder ({src}); write to another folder (or another --tag).")
    _check_destination(src_format, dst_format, src, src_tag, dst, tag, overwrite)
    description = _describe(src_format, src, src_tag, config_file, trust_remote_code)
    if dst_format == "nxd":  # tp / pp / heads problems surface before any tensor is read
        from scaledown.parallel import ParallelPlan
        ParallelPlan.for_model(description.skeleton(), tp=tp, pp=pp, kv_replication=kv_replication)
    log(f"reading {src_format} checkpoint {src}")
    ckpt = _read(src_format, src, src_tag, config_file, trust_remote_code)
    log(f"writing {dst_format} checkpoint {dst}")
    path = _write(ckpt, dst_format, dst, tp, pp, kv_replication, xser, merge_lora, tag, zero1_dp, overwrite)
    carried = ["weights"]
    if ckpt.optimizer and ckpt.optimizer.moments and dst_format != "hf":
        carried.append(f"Adam moments and step ({ckpt.optimizer.step})")
    if ckpt.trainer_state and dst_format != "hf":
        carried.append(STATE_FILE)
    return ConversionResult(path, carried, list(dict.fromkeys(ckpt.notes)))


def _read(fmt: str, src: str, src_tag: Optional[str], config_file: Optional[str], trust_remote_code: bool):
    if fmt == "hf":
        from scaledown.checkpoint.hf_format import read_hf
        return read_hf(src, trust_remote_code)
    if fmt == "nxd":
        from scaledown.checkpoint.nxd_format import read_nxd
        return read_nxd(src, src_tag, config_file, trust_remote_code)
    from scaledown.checkpoint.deepspeed_read import read_deepspeed
    return read_deepspeed(src, src_tag, config_file, trust_remote_code)


def _check_destination(src_format: str, dst_format: str, src: str, src_tag: Optional[str], dst: str,
                       tag: Optional[str], overwrite: bool) -> None:
    """Refuse, before anything is read, to replace what DST holds: the whole folder for hf, DST/TAG for nxd and
    deepspeed (a default tag comes from the source's step and is checked again by the writer)."""
    from scaledown.destination import check_destination
    if dst_format == "hf":
        check_destination(dst, overwrite, "DST")
    elif tag:
        check_destination(os.path.join(dst, tag), overwrite, "DST/--tag")


def _write(ckpt, fmt: str, dst: str, tp: int, pp: int, kv_replication: Optional[int], xser: bool, merge_lora: bool,
           tag: Optional[str], zero1_dp: Optional[int] = None, overwrite: bool = False) -> str:
    if fmt == "hf":
        from scaledown.checkpoint.hf_format import write_hf
        write_hf(ckpt, dst, merge_lora=merge_lora)
        return dst
    if fmt == "nxd":
        from scaledown.checkpoint.nxd_format import write_nxd
        return write_nxd(ckpt, dst, tp=tp, pp=pp, kv_replication=kv_replication, xser=xser, tag=tag, zero1_dp=zero1_dp,
                         overwrite=overwrite)
    from scaledown.checkpoint.deepspeed_write import write_deepspeed
    return write_deepspeed(ckpt, dst, tag=tag, overwrite=overwrite)
