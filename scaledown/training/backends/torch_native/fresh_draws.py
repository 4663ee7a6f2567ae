# Fresh nn.Linear weights (the compressor's projection) left on meta while building, each rank drawing only its shard.
"""Inside `FreshDraws.building()` (installed as scaledown.models.fresh_weights' maker by meta_load.MetaBuild) each
nn.Linear's parameters go to the meta device as they are registered and its reset_parameters runs on them, recording
the uniform_ draws it makes (torch's Linear: kaiming_uniform_ then uniform_, both Tensor.uniform_). For each draw the
CPU generator's state is saved, then the generator is advanced as the real draw would have (the same uniform_ calls in
row chunks: CPU uniform_ consumes its stream one element at a time, so chunks give the whole draw's values), so every
later draw of the build is the full build's. After sharding, `draw_local` replays a parameter's stream from its state
and keeps this rank's slice: no more than a chunk (about 1M elements) beyond the local shard at any time.
A reset_parameters that draws with anything else (a subclass's normal_) is run for real instead: whole, as before.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

CHUNK = 1 << 20   # elements drawn at a time while advancing or replaying a stream
_RANDOM = {"uniform_", "normal_", "bernoulli_", "exponential_", "geometric_", "log_normal_", "cauchy_", "random_"}


@dataclass(frozen=True)
class Draw:
    """Where a fresh parameter's values come from: uniform(low, high) from the CPU generator state `state`."""
    state: torch.Tensor
    low: float
    high: float


class _Recorder(TorchDispatchMode):
    """Notes the random in-place aten calls made on tensors (meta: nothing is drawn) as (name, tensor, args, kwargs);
    at the aten level, so the uniform_ inside nn.init's functions is seen too."""

    def __init__(self):
        super().__init__()
        self.calls: list = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name in _RANDOM and args and isinstance(args[0], torch.Tensor):
            self.calls.append((name, args[0], args[1:], kwargs))
        return func(*args, **kwargs)


def _uniform(tensor: torch.Tensor, low: float, high: float, rows: slice, out: Optional[torch.Tensor],
             index: tuple[slice, ...]) -> None:
    """Draw `tensor`'s shape from the generator in chunks of rows; copy rows `rows` (and `index` of the other dims)
    into `out` (None: only advance the generator)."""
    shape = tuple(tensor.shape) or (1,)
    step = max(1, CHUNK // max(1, tensor[0].numel() if tensor.dim() else 1))
    for start in range(0, shape[0], step):
        chunk = torch.empty((min(step, shape[0] - start), *shape[1:]), dtype=tensor.dtype).uniform_(low, high)
        lo, hi = max(start, rows.start), min(start + len(chunk), rows.stop)
        if out is not None and lo < hi:
            out[lo - rows.start:hi - rows.start].copy_(chunk[(slice(lo - start, hi - start), *index)])


class FreshDraws:
    """The fresh Linear parameters left on meta while building: id(parameter) -> Draw, then name -> Draw."""

    def __init__(self):
        self.by_id: dict[int, Draw] = {}

    @contextlib.contextmanager
    def building(self) -> Iterator[None]:
        reset, register = nn.Linear.reset_parameters, nn.Module.register_parameter

        def on_meta(module, name, param):
            register(module, name, param)
            if isinstance(module, nn.Linear) and param is not None and param.device.type != "meta":
                module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

        def recorded(linear):
            params = [p for p in linear.parameters(recurse=False)]
            if not all(p.device.type == "meta" for p in params):
                return reset(linear)
            recorder = _Recorder()
            with recorder:
                reset(linear)
            draws = [(t, *_bounds(args, kwargs)) for name, t, args, kwargs in recorder.calls if name == "uniform_"]
            mine = {id(p) for p in params}
            if len(draws) != len(recorder.calls) or any(id(t) not in mine or kwargs.get("generator") is not None
                                                        for (t, *_), (*_, kwargs) in zip(draws, recorder.calls)):
                for name, param in list(linear.named_parameters(recurse=False)):   # not replayable: drawn whole
                    torch.utils.swap_tensors(param, nn.Parameter(torch.empty_like(param, device="cpu"),
                                                                 param.requires_grad))
                return reset(linear)
            for tensor, low, high in draws:
                self.by_id[id(tensor)] = Draw(torch.get_rng_state(), low, high)
                _uniform(tensor, low, high, slice(0, 0), None, ())   # advance as the real draw does

        nn.Linear.reset_parameters, nn.Module.register_parameter = recorded, on_meta
        try:
            yield
        finally:
            nn.Linear.reset_parameters, nn.Module.register_parameter = reset, register


def _bounds(args, kwargs) -> tuple[float, float]:
    low = args[0] if len(args) > 0 else kwargs.get("from", 0.0)
    high = args[1] if len(args) > 1 else kwargs.get("to", 1.0)
    return float(low), float(high)


@torch.no_grad()
def drawn(shape: torch.Size, dtype: torch.dtype, draw: Draw, index: Optional[tuple[slice, ...]]) -> torch.Tensor:
    """The slice `index` (None: all) of the parameter of global `shape` that `draw` describes, replayed from its
    generator state (the generator itself is left as it was)."""
    index = index if index is not None else tuple(slice(0, n) for n in shape)
    whole = torch.empty(shape, device="meta", dtype=dtype)
    rows, rest = (index[0], index[1:]) if index else (slice(0, 1), ())
    out = torch.empty((rows.stop - rows.start, *(s.stop - s.start for s in rest)), dtype=dtype)
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(draw.state)
        _uniform(whole, draw.low, draw.high, rows, out, rest)
    return out.reshape(tuple(s.stop - s.start for s in index))
