# The checkpoint formats `scaledown convert` knows: one table row per format (its reader, writer and options).
"""A format is registered by one CheckpointFormat row in FORMATS; `scaledown convert` (checkpoint/conversion.py, cli.py)
reads names, help text, which flags apply, and the reader / writer from here, so a new format needs no edit
elsewhere. Readers and writers are named "module:function" and imported only when used (torch, DCP, safetensors).

Contracts (every reader / writer already follows them; FullCheckpoint is the meeting point):
  describe(src, src_tag, config_file, trust_remote_code) -> ModelDescription      cheap, no tensors read
  read(src, src_tag, config_file, trust_remote_code) -> FullCheckpoint
  write(ckpt, dst, **options) -> str (the folder written); options: tag, overwrite and the row's own `options`
  reads_late: write gets a PendingCheckpoint and refuses bad options (ConfigError / CheckpointError) on its
    description before it calls load(), i.e. before any tensor is read
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Optional


@dataclass(frozen=True)
class CheckpointFormat:
    name: str                           # --from / --to value
    help: str                           # one line of `scaledown convert --help`
    read: Optional[str] = None          # "module:function" (None: converted elsewhere, e.g. oscar)
    write: Optional[str] = None
    find_tag: Optional[str] = None      # "module:function" (src, src_tag) -> folder; None: SRC is the folder (hf)
    describe: Optional[str] = None      # default: describe_checkpoint(find_tag(...)) (scaledown_checkpoint.json /
                                        # trainer_state.json / --config)
    reads_late: bool = False            # write(PendingCheckpoint, ...) checks its options before reading
    options: tuple[str, ...] = ()       # convert() options only this writer takes ("tp", "merge_lora", ...)
    tagged: bool = True                 # writes DST/TAG (--tag applies); False: DST itself
    what: str = ""                      # how messages name a checkpoint of this format ("DeepSpeed")


def _fn(path: str) -> Callable[..., Any]:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


_C = "scaledown.checkpoint."
FORMATS: dict[str, CheckpointFormat] = {f.name: f for f in (
    CheckpointFormat("hf", "the ScaleDownModel.save_pretrained folder (a run's OUTPUT_DIR/final, or OUTPUT_DIR)",
                     read=_C + "hf_format:read_hf_checkpoint", write=_C + "hf_format:write_hf_folder",
                     describe=_C + "hf_format:describe_hf_checkpoint", options=("merge_lora",), tagged=False,
                     what="Hugging Face"),
    CheckpointFormat("deepspeed", "a ZeRO-3 save dir or one tag in it (read); a universal checkpoint any world size "
                     "starts from (write)", read=_C + "deepspeed_read:read_deepspeed",
                     write=_C + "deepspeed_write:write_deepspeed", find_tag=_C + "deepspeed_read:find_tag",
                     what="DeepSpeed"),
    CheckpointFormat("nxd", "NeuronX Distributed trainer format DIR/TAG/model/dp_rank_00_tp_rank_TT_pp_rank_PP.pt "
                     "(plain or xser)", read=_C + "nxd_format:read_nxd", write=_C + "nxd_format:write_nxd",
                     find_tag=_C + "nxd_files:find_tag", reads_late=True,
                     options=("tp", "pp", "kv_replication", "xser", "zero1_dp"), what="NxD"),
    CheckpointFormat("dcp", "the torch backend's torch.distributed.checkpoint folder DIR/step_N/model_and_optimizer "
                     "(any world size; --resume_from it at any world size)",
                     read=_C + "dcp_format:read_dcp", write=_C + "dcp_format:write_dcp",
                     find_tag=_C + "dcp_format:find_tag", what="DCP"),
    CheckpointFormat("oscar", "NAVER's released OSCAR format (naver/oscar-*: config.json, adapters.pth, "
                     "compressor/...), read natively without remote code; converts to and from hf only",
                     tagged=False, what="released OSCAR"),
)}


def get(name: str) -> CheckpointFormat:
    return FORMATS[name]


def function(path: str) -> Callable[..., Any]:
    """The reader / writer named "module:function"."""
    return _fn(path)


def flag_of(option: str) -> str:
    return f"--{option}"


def formats_taking(option: str) -> list[str]:
    return [f.name for f in FORMATS.values() if option in f.options]
