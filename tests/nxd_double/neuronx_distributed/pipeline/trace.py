# TEST DOUBLE of neuronx_distributed.pipeline.trace (NxD 0.17): torch.fx tracing with leaf modules and autowrap.
"""What NxD 0.17's trace_model does, re-written for the double with NxD's signatures: a torch.fx.Tracer with
`param_shapes_constant=True`; a module is a leaf when any name in `leaf_modules` is a substring of its class name
(the transformer layer class and NxD's parallel layers always are); functions of `autowrap_modules` and the
`autowrap_functions` are recorded as calls instead of traced into;
`autowrap_obj_methods` ({object: [method names]}) swaps those attributes for fx-wrapped calls during tracing.
`tracer_cls` "torch" (default for non-HF roots) or a Tracer class taking the same keyword arguments. The HF tracer
("hf") needs transformers.utils.fx, which transformers 5 removed; the double does not offer it.
"""
from __future__ import annotations

import inspect
import math
from contextlib import contextmanager
from typing import Any, Optional

import torch
from torch.fx._symbolic_trace import _create_wrapped_func


class NxDTracer(torch.fx.Tracer):
    def is_leaf_module(self, m: torch.nn.Module, module_qualified_name: str) -> bool:
        names = getattr(self, "leaf_modules", [])
        if any(t in type(m).__name__ for t in names) or module_qualified_name in names:
            return True
        return super().is_leaf_module(m, module_qualified_name)


class TorchTracerWrapper(NxDTracer):
    def __init__(self, **config) -> None:
        super().__init__(autowrap_modules=tuple(config["autowrap_modules"]),
                         autowrap_functions=tuple(config["autowrap_functions"]), param_shapes_constant=True)
        self.leaf_modules = list(config.get("leaf_modules", []))
        self.name = "pytorch"


def get_tracer_class(model, tracer_cls=None):
    if tracer_cls is None or tracer_cls == "torch":
        return TorchTracerWrapper   # the double has no HF models to detect: no HFTracer default
    if isinstance(tracer_cls, str):
        raise ValueError(f"Unsupported tracer_cls {tracer_cls} (the NxD test double has no HF tracer)")
    return tracer_cls


def get_concrete_args(model, input_names=None, args=None, kwargs=None):
    signature = inspect.signature(model.forward)
    if input_names is None and (kwargs is not None or args is not None):
        input_names = list(signature.parameters)[:len(args or [])] + list(kwargs or {})
    if input_names is not None and not set(input_names) <= set(signature.parameters):
        raise ValueError(f"The model does not have input(s) named: {', '.join(input_names)}, expected a subset of the "
                         f"following: {', '.join(signature.parameters)}")
    assert input_names is not None
    return {p.name: p.default for p in signature.parameters.values() if p.name not in input_names}


@contextmanager
def patch_obj_method(autowrap_obj_methods: Optional[dict]):
    """Swap obj.method for an fx-wrapped call while tracing; an instance's own copy is removed again afterwards."""
    originals = []
    try:
        for obj, methods in (autowrap_obj_methods or {}).items():
            assert isinstance(methods, list), f"Expect autowrap_obj_methods has list as value but getting {type(methods)}"
            for method in methods:
                if not hasattr(obj, method):
                    raise ValueError(f"Inside autowrap_obj_methods obj type {type(obj)} does not have method {method}")
                originals.append((obj, method, vars(obj).get(method)))
                setattr(obj, method, _create_wrapped_func(getattr(obj, method)))
        yield
    finally:
        for obj, method, own in reversed(originals):
            if own is None:
                delattr(obj, method)     # a method of the class: drop the wrapped copy on the instance
            else:
                setattr(obj, method, own)


def trace_model(model: torch.nn.Module, args=None, kwargs=None, input_names: Optional[list[str]] = None,
                tracer_cls: Any = None, leaf_modules: Optional[list] = None,
                autowrap_functions: Optional[list] = None, autowrap_modules: Optional[list] = None,
                autowrap_obj_methods: Optional[dict] = None) -> torch.fx.GraphModule:
    import neuronx_distributed
    from neuronx_distributed import parallel_layers
    from neuronx_distributed.parallel_layers import PARALLEL_FUNCTIONS, PARALLEL_MODULES
    from torch_xla.core import xla_model as xm
    tracer_cls = get_tracer_class(model, tracer_cls=tracer_cls)
    concrete_args = get_concrete_args(model, input_names, args, kwargs)
    leaf_modules = list(set(list(leaf_modules or []) + [m.__name__ for m in PARALLEL_MODULES]))
    autowrap_functions = list(set(list(autowrap_functions or []) + PARALLEL_FUNCTIONS))
    autowrap_modules = list(set(list(autowrap_modules or []) + [math, neuronx_distributed, parallel_layers, xm]))
    tracer = tracer_cls(leaf_modules=leaf_modules, autowrap_modules=autowrap_modules,
                        autowrap_functions=autowrap_functions)
    with patch_obj_method(autowrap_obj_methods):
        graph = tracer.trace(model, concrete_args=concrete_args)
        traced = torch.fx.GraphModule(model, graph)
    traced.graph.eliminate_dead_code()
    traced.delete_all_unused_submodules()
    traced.graph.lint()
    traced.recompile()
    return traced
