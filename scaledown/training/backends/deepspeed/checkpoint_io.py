# Reading DeepSpeed checkpoints safely: pre-flight checks, and torch.load(weights_only=True) with an allow-list.
from __future__ import annotations

import contextlib
import glob
import os
from typing import Iterator

import torch

from scaledown.checkpoint import folder_protocol as ckpt
from scaledown.checkpoint.safe_load import problem_with
from scaledown.errors import CheckpointError


def _allowed_classes() -> list:
    """The only non-tensor objects DeepSpeed's ZeRO checkpoints pickle (0.19): an enum and the loss scaler."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    return [ZeroStageEnum, LossScaler, DynamicLossScaler]


def safe_load(path: str, map_location=None):
    """torch.load with weights_only=True: a tampered checkpoint cannot run code when it is read."""
    try:
        with torch.serialization.safe_globals(_allowed_classes()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a damaged or missing file: name it and the checkpoint to use instead
        problem = problem_with(path) or f"could not be read ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
        raise ckpt.damaged(path, problem) from None


@contextlib.contextmanager
def use_safe_loading(engine) -> Iterator[None]:
    """Route the engine's checkpoint reads (DeepSpeed loads with weights_only=False) through safe_load."""
    checkpoint_engine = engine.checkpoint_engine
    checkpoint_engine.load = safe_load  # instance attribute shadows the class method
    try:
        yield
    finally:
        del checkpoint_engine.load


def check_deepspeed_checkpoint(path: str, dp_rank: int, dp_size: int, stage: int) -> None:
    """Clear errors before DeepSpeed's own (an assertion or a size mismatch deep in loading)."""
    state = ckpt.read_state(path)
    backend = state.get("backend")
    if backend != "deepspeed":
        raise CheckpointError(f"{path} was written by the {backend!r} backend, not DeepSpeed. Resume it with the "
                              f"backend that wrote it (train.py for 'local'), or convert it with `scaledown convert`.")
    saved_dp = int(state.get("dp_size", -1))
    if saved_dp != dp_size:
        raise CheckpointError(
            f"{path} was written by {saved_dp} data-parallel ranks but this run has {dp_size}. ZeRO checkpoints are "
            f"partitioned per rank: resume with {saved_dp} ranks, or convert it to a universal checkpoint that any "
            f"world size resumes from (scaledown convert --from deepspeed --to deepspeed {path} {path}_universal, "
            f"then --resume_from {path}_universal/{os.path.basename(os.path.normpath(path))}).")
    pattern = "zero_pp_rank_{}_mp_rank_00_model_states.pt" if stage == 3 else "mp_rank_00_model_states.pt"
    mine = os.path.join(path, pattern.format(dp_rank))
    if not os.path.isfile(mine):
        found = sorted(os.path.basename(p) for p in glob.glob(os.path.join(path, "*model_states.pt")))
        raise CheckpointError(f"{path} has no {os.path.basename(mine)} (found {found or 'no model-states files'}). "
                              f"It was written with another ZeRO stage than this run's {stage}: resume with the "
                              f"DeepSpeed config it was written with.")
