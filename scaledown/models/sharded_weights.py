# Whole-weight access for model code when a backend keeps weights sharded (ZeRO-3): a hook set from outside.
"""Model code that reads or edits whole weights outside forward (copying the generator's first layers
into the n_layers compressor, measuring the token-embedding scale) wraps that access in
`full_weights(params, modify=...)`. By default it does nothing. A backend that partitions weights
installs a gatherer with `use_gatherer(...)` (DeepSpeed ZeRO-3: `deepspeed.zero.GatheredParameters`),
so this package never imports a backend.
"""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Iterable, Iterator, Optional

import torch
from torch.distributed.tensor import DTensor

# gatherer(params, modify) -> context in which `params` hold their full values on every rank;
# with modify=True, edits made inside the context are kept (and made consistent across ranks).
Gatherer = Callable[[list[torch.nn.Parameter], bool], ContextManager]

_gatherer: Optional[Gatherer] = None


@contextlib.contextmanager
def full_weights(params: Iterable[torch.nn.Parameter], modify: bool = False) -> Iterator[None]:
    """Inside: every parameter in `params` holds its whole tensor (a no-op unless a gatherer is installed)."""
    params = list(params)
    if _gatherer is None:
        if any(p.numel() == 0 for p in params):  # sharded elsewhere: reading it now would give garbage
            raise RuntimeError("model code needs whole weights but they are sharded (empty here) and no gatherer is "
                               "installed: wrap the work in scaledown.models.sharded_weights.use_gatherer(...) "
                               "(the DeepSpeed backend installs deepspeed.zero.GatheredParameters)")
        yield
        return
    with _gatherer(params, modify):
        yield


@contextlib.contextmanager
def use_gatherer(gatherer: Optional[Gatherer]) -> Iterator[None]:
    """Install `gatherer` for the duration of the block (backends wrap model building and training in it)."""
    previous = install_gatherer(gatherer)
    try:
        yield
    finally:
        install_gatherer(previous)


def install_gatherer(gatherer: Optional[Gatherer]) -> Optional[Gatherer]:
    """Install `gatherer` until replaced; returns the previous one (for backends that live as long as the process)."""
    global _gatherer
    previous, _gatherer = _gatherer, gatherer
    return previous


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """The full value of a tensor a backend may have turned into a DTensor (FSDP2 / tensor parallel): a collective
    every rank of its mesh must reach; plain tensors come back as they are."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
