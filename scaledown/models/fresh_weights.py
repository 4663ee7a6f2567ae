# Fresh (not loaded) weights that a backend may create sharded: model code builds them inside `fresh_weights()`.
"""The compressor's projection is drawn from the seed, not read from files. A backend that never holds whole weights
(the torch backend's meta build: backends/torch_native/fresh_draws.py) installs a maker with `use_fresh_maker`;
inside `fresh_weights()` it may leave the new modules' weights on the meta device and draw each rank's shard later,
equal to what the seed gives here. By default it does nothing, so this package never imports a backend.
"""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Iterator, Optional

_maker: Optional[Callable[[], ContextManager]] = None


@contextlib.contextmanager
def fresh_weights() -> Iterator[None]:
    """Modules built inside hold freshly drawn weights (a no-op unless a maker is installed)."""
    if _maker is None:
        yield
        return
    with _maker():
        yield


@contextlib.contextmanager
def use_fresh_maker(maker: Optional[Callable[[], ContextManager]]) -> Iterator[None]:
    """Install `maker` for the duration of the block (the torch backend's meta build)."""
    global _maker
    previous, _maker = _maker, maker
    try:
        yield
    finally:
        _maker = previous
