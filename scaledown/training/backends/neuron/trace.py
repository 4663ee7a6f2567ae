# torch.fx tracing of the pipeline module for NxDPPModel: transformers' causal-mask builders become leaf calls.
"""NxDPPModel traces the wrapped module with torch.fx (tracer_cls) and cuts the graph at decoder layers.
transformers builds attention masks with data-dependent Python (`attention_mask.ndim == 2`, `len(mask.shape)`),
which symbolic tracing cannot follow, and passes the model config (no fx value) to the builder. NxD's remedy is
to keep such code out of the trace (leaf modules, autowrap_*); `autowrap_functions` cannot take the config
argument, so this tracer routes each decoder's mask builder through a parameterless leaf module (MaskCall)
registered on the pipeline module: one call_module node per decoder, computed eagerly at run time.

Both transformers generations are covered: 4.4x computes the mask in the decoder's `_update_causal_mask`
method, 4.5x+ in module-level `create_*_mask` functions of the modeling file.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import nn


class _Slot:
    """Stands for the i-th traced tensor argument of a MaskCall."""

    def __init__(self, index: int):
        self.index = index


class MaskCall(nn.Module):
    """A leaf: calls one decoder's mask builder with the arguments recorded while tracing (config included)."""

    def __init__(self):
        super().__init__()
        self.build: Callable | None = None
        self.args: tuple = ()
        self.kwargs: dict[str, Any] = {}

    def record(self, build: Callable, args: tuple, kwargs: dict[str, Any]) -> list:
        """Keep the non-traced arguments; returns the traced ones, in order, as this module's inputs."""
        traced: list = []

        def slot(value):
            if isinstance(value, torch.fx.Proxy):
                traced.append(value)
                return _Slot(len(traced) - 1)
            return value
        self.build = build
        self.args = tuple(slot(a) for a in args)
        self.kwargs = {k: slot(v) for k, v in kwargs.items()}
        return traced

    def forward(self, *tensors):
        def fill(value):
            return tensors[value.index] if isinstance(value, _Slot) else value
        return self.build(*[fill(a) for a in self.args], **{k: fill(v) for k, v in self.kwargs.items()})


def decoders(module: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The transformers decoder stacks inside `module` (a config and a `layers` list)."""
    for name, sub in module.named_modules():
        if hasattr(sub, "config") and isinstance(getattr(sub, "layers", None), nn.ModuleList):
            yield name, sub


def mask_calls(module: nn.Module) -> nn.ModuleDict:
    """One MaskCall per decoder stack, keyed by the stack's path (dots replaced)."""
    return nn.ModuleDict({name.replace(".", "__"): MaskCall() for name, _ in decoders(module)})


@contextmanager
def masks_as_leaves(root: nn.Module, calls: nn.ModuleDict):
    """While tracing, every decoder's mask builder call becomes a call of its MaskCall (a leaf module)."""
    undo: list[Callable[[], None]] = []

    def routed(call: MaskCall, build: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            return call(*call.record(build, args, kwargs))
        return wrapper
    by_config = {}
    for name, decoder in decoders(root):
        call = calls[name.replace(".", "__")]
        by_config[id(decoder.config)] = call
        if hasattr(decoder, "_update_causal_mask"):      # transformers 4.4x: a method on the decoder
            decoder._update_causal_mask = routed(call, decoder._update_causal_mask)
            undo.append(lambda d=decoder: delattr(d, "_update_causal_mask"))
    for module_name in {type(d).__module__ for _, d in decoders(root)}:   # transformers 4.5x+: module functions
        namespace = vars(sys.modules[module_name])
        for fname, fn in list(namespace.items()):
            if fname.startswith("create_") and fname.endswith("_mask") and callable(fn):
                def by_config_wrapper(*args, __fn=fn, **kwargs):
                    call = by_config[id(kwargs["config"])]
                    return call(*call.record(__fn, args, kwargs))
                namespace[fname] = by_config_wrapper
                undo.append(lambda ns=namespace, n=fname, f=fn: ns.__setitem__(n, f))
    try:
        yield
    finally:
        for step in reversed(undo):
            step()


def tracer_class(base: type) -> type:
    """NxD's torch tracer (`base`, e.g. neuronx_distributed.pipeline.trace.TorchTracerWrapper) with mask leaves.
    Passed as pipeline_config["tracer_cls"]: NxD constructs it with its own leaf / autowrap arguments."""

    class ScaleDownTracer(base):
        def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
            return isinstance(m, MaskCall) or super().is_leaf_module(m, module_qualified_name)

        def trace(self, root, concrete_args=None):
            with masks_as_leaves(root, root.mask_calls):
                return super().trace(root, concrete_args=concrete_args)
    return ScaleDownTracer


def leaf_module_names(model: nn.Module, layer_names: list[str]) -> list[str]:
    """Class names NxD's tracer must keep whole (pipeline_config leaf_module_cls): modules that own weights or
    buffers themselves (norms, rotary embeddings, memory tokens). torch.fx turns a weight read inside a traced
    module into a get_attr node, and split_module leaves those outside every stage: NxD would then freeze the
    weight (no stage owns it) and never move the buffer to the device. torch.nn's own modules are leaves anyway;
    modules holding decoder layers must stay traced (the cuts are at those layers)."""
    names: list[str] = []
    for path, module in model.named_modules():
        cls = type(module)
        if cls.__module__.startswith("torch.nn") or cls.__name__ in names:
            continue
        owns = any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))
        inside_layer = any(path == l or path.startswith(l + ".") for l in layer_names)
        holds_layer = any(l.startswith(path + ".") for l in layer_names) if path else True
        if owns and not inside_layer and not holds_layer:
            names.append(cls.__name__)
    return names
