# TEST DOUBLE of neuronx_distributed.trainer.checkpoint: NxD 0.17's trainer format (markers, shard names, xser).
from __future__ import annotations

import os
import shutil
from typing import Any, Optional

import torch
import torch.distributed as dist

from neuronx_distributed.parallel_layers import parallel_state as ps
from torch_xla.core import xla_model as xm
from torch_xla.utils.serialization import TensorReference


def _shard(dp: int = 0) -> str:
    return (f"dp_rank_{dp:02d}_tp_rank_{ps.get_tensor_model_parallel_rank():02d}_"
            f"pp_rank_{ps.get_pipeline_model_parallel_rank():02d}.pt")


def _save(obj: Any, file: str, use_xser: bool) -> None:
    # Written independently of scaledown/checkpoint/nxd_files.py on purpose: the converters are tested on files
    # this stand-in for NxD writes, so sharing their writer would make those tests circular.
    if not use_xser:
        torch.save(obj, file)
        return
    folder = file + ".tensors"
    os.makedirs(folder, exist_ok=True)
    info = {}

    def replace(value):
        if isinstance(value, torch.Tensor):
            tid = len(info)
            torch.save(value.detach().cpu().contiguous(), os.path.join(folder, f"tensor_{tid}.pt"))
            info[tid] = {"dtype": value.dtype, "shape": value.shape, "expert_model_parallel": False}
            return TensorReference(tid)
        if isinstance(value, dict):
            return type(value)((k, replace(v)) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return type(value)(replace(v) for v in value)
        return value
    torch.save(replace(obj), file)
    torch.save(info, file + ".info.pt")


def _load(file: str) -> Any:
    data = torch.load(file, weights_only=False)   # NxD itself unpickles its own files
    folder = file + ".tensors"
    if not os.path.isdir(folder):
        return data

    def resolve(value):
        if isinstance(value, TensorReference):
            return torch.load(os.path.join(folder, f"tensor_{value.tid}.pt"), weights_only=True)
        if isinstance(value, dict):
            return type(value)((k, resolve(v)) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return type(value)(resolve(v) for v in value)
        return value
    return resolve(data)


def _tags(root: str, completed: bool) -> list[str]:
    if not os.path.isdir(root):
        return []
    found = [t for t in os.listdir(root) if os.path.isfile(os.path.join(root, t, "checkpoint"))]
    if completed:
        found = [t for t in found if os.path.isfile(os.path.join(root, t, "done"))]
    return sorted(found, key=lambda t: os.path.getmtime(os.path.join(root, t, "checkpoint")))


def save_checkpoint(checkpoint_dir_str: str, tag: str, model: Any = None, optimizer: Any = None, scheduler=None,
                    user_content=None, num_workers=8, use_xser=False, num_kept_ckpts=None, async_save=False,
                    zero1_optimizer=False, use_zero1_dcp=False, avoid_saving_lower_precision_weights=False) -> None:
    assert dist.is_initialized(), "Only support distributed training mode."
    path = os.path.join(checkpoint_dir_str, tag)
    if dist.get_rank() == 0:
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "checkpoint"), "w") as f:
            f.write("1")
    xm.rendezvous("begin")
    dp = ps.get_data_parallel_rank()
    if optimizer is not None:
        zero1 = optimizer.nxd_config["optimizer_config"]["zero_one_enabled"]
        os.makedirs(os.path.join(path, "optim"), exist_ok=True)
        if zero1 or dp == 0:
            _save(optimizer.state_dict(), os.path.join(path, "optim", _shard(dp if zero1 else 0)), use_xser)
    if model is not None:
        os.makedirs(os.path.join(path, "model"), exist_ok=True)
        if dp == 0:
            _save(model.state_dict(), os.path.join(path, "model", _shard()), use_xser)
    if scheduler is not None and dist.get_rank() == 0:
        torch.save(scheduler.state_dict(), os.path.join(path, "scheduler.pt"))
    if user_content is not None and dist.get_rank() == 0:
        torch.save(user_content, os.path.join(path, "user_content.pt"))
    xm.rendezvous("saving checkpoint done")
    if dist.get_rank() == 0:
        with open(os.path.join(path, "done"), "w") as f:
            f.write("1")
        if num_kept_ckpts is not None and num_kept_ckpts != -1:
            done = _tags(checkpoint_dir_str, completed=True)
            for old in done[:max(0, len(done) - num_kept_ckpts)]:
                os.remove(os.path.join(checkpoint_dir_str, old, "done"))
                shutil.rmtree(os.path.join(checkpoint_dir_str, old))
    xm.rendezvous("mark checkpoint as done")


def load_checkpoint(path: str, tag: Optional[str] = None, model: Optional[torch.nn.Module] = None,
                    optimizer: Optional[torch.optim.Optimizer] = None, scheduler: Any = None, num_workers: int = 8,
                    strict: bool = True, use_zero1_dcp: bool = False) -> Any:
    assert dist.is_initialized(), "Only support distributed training mode."
    if tag is None:
        tags = _tags(path, completed=True)
        if not tags:
            raise RuntimeError(f"Error: no checkpoint under directory {path}")
        tag = tags[-1]
    folder = os.path.join(path, tag)
    if model is not None:
        result = model.load_state_dict(_load(os.path.join(folder, "model", _shard())), strict=strict)
        if strict and (result.missing_keys or result.unexpected_keys):
            raise RuntimeError(f"missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}")
    if optimizer is not None:
        zero1 = optimizer.nxd_config["optimizer_config"]["zero_one_enabled"]
        optimizer.load_state_dict(_load(os.path.join(folder, "optim", _shard(ps.get_data_parallel_rank() if zero1 else 0))))
    if scheduler is not None:
        scheduler.load_state_dict(torch.load(os.path.join(folder, "scheduler.pt"), weights_only=True))
    user = os.path.join(folder, "user_content.pt")
    return torch.load(user, weights_only=False) if os.path.isfile(user) else None
