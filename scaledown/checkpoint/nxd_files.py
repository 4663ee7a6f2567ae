# NeuronX Distributed trainer-format files: names, markers, plain and xser shard I/O (no torch_xla needed).
"""Layout written by neuronx_distributed.trainer.save_checkpoint (NxD 0.17, trainer/checkpoint.py):

    <dir>/<tag>/checkpoint                                  "1" when saving starts
    <dir>/<tag>/done                                        "1" once every rank finished: the tag is complete
    <dir>/<tag>/model/dp_rank_00_tp_rank_TT_pp_rank_PP.pt   model shard: {name: local tensor}
    <dir>/<tag>/optim/dp_rank_00_tp_rank_TT_pp_rank_PP.pt   optimizer shard (torch state_dict), without ZeRO-1
    <dir>/<tag>/optim/dp_rank_DD_tp_rank_TT_pp_rank_PP.pt   ZeRO-1: one per data-parallel rank, torch-xla's
        ZeroRedundancyOptimizer.state_dict(): "param_groups", "state" {} , "base_state" {index: state of this
        rank's dim-0 chunk, padded to a multiple of the DP size}, "shape_info" {index: local shape}

xser (use_xser=True): X.pt is the same dict with torch_xla TensorReference(tid) in place of tensors,
X.pt.tensors/tensor_<tid>.pt one tensor per file, X.pt.info.pt {tid: {dtype, shape, expert_model_parallel}}.
load_checkpoint detects xser by a *.tensors folder.
"""
from __future__ import annotations

import os
import re
from typing import Any

import torch

from scaledown.checkpoint.description import METADATA_FILE, read_json
from scaledown.checkpoint.safe_load import TensorReference, load_file, save_with_references
from scaledown.errors import CheckpointError

SHARD = re.compile(r"^dp_rank_(\d+)_tp_rank_(\d+)_pp_rank_(\d+)\.pt$")
DONE, STARTED = "done", "checkpoint"


def shard_name(tp_rank: int, pp_rank: int, dp_rank: int = 0) -> str:
    return f"dp_rank_{dp_rank:02d}_tp_rank_{tp_rank:02d}_pp_rank_{pp_rank:02d}.pt"


def is_tag(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "model")) or os.path.isfile(os.path.join(path, STARTED))


def find_tag(path: str, tag: str | None = None) -> str:
    """`path` is a tag folder, or a checkpoint dir: then `tag`, or the newest complete tag (NxD's load rule)."""
    if tag:
        path = os.path.join(path, tag)
    elif not is_tag(path):
        if not os.path.isdir(path):
            raise CheckpointError(f"{path} does not exist. Pass an NxD checkpoint dir or one tag folder in it.")
        tags = [os.path.join(path, t) for t in os.listdir(path) if os.path.isfile(os.path.join(path, t, DONE))]
        if not tags:
            raise CheckpointError(f"{path} holds no complete NxD checkpoint (no <tag>/{DONE} marker). Pass a tag folder "
                                  f"or the directory NxD's save_checkpoint wrote to.")
        path = max(tags, key=lambda t: os.path.getmtime(os.path.join(t, DONE)))
    if not os.path.isdir(os.path.join(path, "model")):
        raise CheckpointError(f"{path} has no model/ folder: it is not an NxD trainer-format checkpoint tag.")
    if not os.path.isfile(os.path.join(path, DONE)):
        raise CheckpointError(f"{path} has no '{DONE}' marker: NxD did not finish writing it (the run stopped while "
                              f"saving). Use an older complete tag.")
    return path


def list_shards(folder: str) -> dict[tuple[int, int], str]:
    """{(tp_rank, pp_rank): file} of a model/ or optim/ folder; refuses ZeRO-1 (per-DP) model shards."""
    found: dict[tuple[int, int], str] = {}
    for name in sorted(os.listdir(folder)):
        m = SHARD.match(name)
        if not m:
            continue
        dp, tp, pp = map(int, m.groups())
        if dp != 0:
            raise CheckpointError(f"{os.path.join(folder, name)}: data-parallel rank {dp} files (ZeRO-1 optimizer "
                                  f"shards) are not supported. Save the optimizer without ZeRO-1, or convert with "
                                  f"nxd_convert_zero_checkpoints --convert_to_full first.")
        found[(tp, pp)] = os.path.join(folder, name)
    return found


def list_optimizer_shards(folder: str) -> dict[tuple[int, int], dict[int, str]]:
    """{(tp_rank, pp_rank): {dp_rank: file}} of an optim/ folder (ZeRO-1 writes one file per data-parallel rank)."""
    found: dict[tuple[int, int], dict[int, str]] = {}
    for name in sorted(os.listdir(folder)):
        m = SHARD.match(name)
        if m:
            dp, tp, pp = map(int, m.groups())
            found.setdefault((tp, pp), {})[dp] = os.path.join(folder, name)
    ranks = max((max(by_dp) + 1 for by_dp in found.values()), default=0)
    for (tp, pp), by_dp in found.items():
        missing = [shard_name(tp, pp, d) for d in range(ranks) if d not in by_dp]
        if missing:
            raise CheckpointError(f"{folder} lacks the ZeRO-1 optimizer files {', '.join(missing[:4])}: copy every "
                                  f"data-parallel rank's file of the checkpoint.")
    return found


def grid_of(shards: dict[tuple[int, int], str], folder: str) -> tuple[int, int]:
    """(tp, pp) of a complete shard grid, or an error naming the missing or extra shards."""
    if not shards:
        raise CheckpointError(f"{folder} holds no dp_rank_00_tp_rank_TT_pp_rank_PP.pt shards.")
    tp = max(t for t, _ in shards) + 1
    pp = max(p for _, p in shards) + 1
    missing = [shard_name(t, p) for t in range(tp) for p in range(pp) if (t, p) not in shards]
    if missing:
        raise CheckpointError(f"{folder} is missing {len(missing)} of {tp * pp} shards for tp={tp}, pp={pp} "
                              f"({', '.join(missing[:4])}). Copy every shard of the checkpoint.")
    return tp, pp


def is_xser(file: str) -> bool:
    return os.path.isdir(file + ".tensors")


def read_shard(file: str) -> dict[str, Any]:
    """A model or optimizer shard, plain or xser, with every TensorReference resolved to its tensor."""
    data = load_file(file)
    if not is_xser(file):
        return data
    folder = file + ".tensors"

    def resolve(value):
        if isinstance(value, TensorReference):
            tensor = load_file(os.path.join(folder, f"tensor_{value.tid}.pt"))
            if not isinstance(tensor, torch.Tensor):
                raise CheckpointError(f"{folder}/tensor_{value.tid}.pt does not hold a tensor.")
            return tensor
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(resolve(v) for v in value)
        return value
    return resolve(data)


def write_shard(obj: dict[str, Any], file: str, xser: bool) -> None:
    """Write a shard as NxD would: torch.save, or the xser reference file + one file per tensor + info."""
    if not xser:
        torch.save(obj, file)
        return
    folder = file + ".tensors"
    os.makedirs(folder, exist_ok=True)
    info: dict[int, dict[str, Any]] = {}

    def replace(value):
        if isinstance(value, torch.Tensor):
            tid = len(info)
            torch.save(value.detach().cpu().contiguous(), os.path.join(folder, f"tensor_{tid}.pt"))
            info[tid] = {"dtype": value.dtype, "shape": value.shape, "expert_model_parallel": False}
            return TensorReference(tid)
        if isinstance(value, dict):
            return {k: replace(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(replace(v) for v in value)
        return value
    save_with_references(replace(obj), file)
    torch.save(info, file + ".info.pt")


def check_optimizer_layout(tag_dir: str, zero1_dp: int | None) -> None:
    """Before NxD loads a tag's optimizer into a run with ZeRO-1 over `zero1_dp` ranks (None: no ZeRO-1): a tag
    written by `scaledown convert --to nxd` records its layout (scaledown_checkpoint.json "zero1_dp"), and a
    mismatch is refused with the conversion that fits. NxD's ZeRO-1 load pops base_state from the rank's own
    dp_rank file (a plain file fails with a bare KeyError); the plain load reads dp_rank_00. A training run's own
    tags (no layout record) were written by the backend's save and carry its settings."""
    meta = read_json(os.path.join(tag_dir, METADATA_FILE))
    if not meta or meta.get("layout") != "nxd":
        return
    written = meta.get("zero1_dp")
    if written == zero1_dp:
        return
    have = f"ZeRO-1's layout for {written} data-parallel ranks" if written else "the plain (non-ZeRO-1) layout"
    run = f"--zero1 true with {zero1_dp} data-parallel ranks" if zero1_dp else "--zero1 false"
    fix = f"--zero1_dp {zero1_dp}" if zero1_dp else "without --zero1_dp"
    raise CheckpointError(f"{tag_dir} holds its optimizer state in {have}, but this run ({run}) loads "
                          f"{'one ZeRO-1 file per data-parallel rank' if zero1_dp else 'the plain layout'}. Convert "
                          f"again with `scaledown convert --from nxd --to nxd SRC DST {fix}` (plus your --tp/--pp), "
                          f"or run with --zero1 {'false' if zero1_dp else 'true'}.")
