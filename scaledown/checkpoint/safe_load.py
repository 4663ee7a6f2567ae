# Loading user checkpoint files safely: torch.load(weights_only=True) with stubs for the few foreign classes they hold.
"""DeepSpeed optimizer files pickle a `LossScaler` object and a `ZeroStageEnum`; NxD xser files pickle
`torch_xla.utils.serialization.TensorReference(tid)` in place of each tensor. Neither DeepSpeed nor
torch_xla is needed to read them: those names are mapped to inert stub classes on an allow-list, so
nothing else in a file can run code (torch's weights_only unpickler refuses every other global).

Writing xser references without torch_xla uses a pickler that emits the same global name.
"""
from __future__ import annotations

import io
import json
import os
import pickle
from typing import Any, Optional

import torch
from safetensors import safe_open

from scaledown.errors import CheckpointError

XSER_REFERENCE = "torch_xla.utils.serialization.TensorReference"


class TensorReference:
    """Stands for torch_xla's TensorReference: the tensor lives in `<file>.tensors/tensor_<tid>.pt`."""

    def __init__(self, tid: int):
        self.tid = tid

    def __repr__(self) -> str:
        return f"TensorReference({self.tid})"


class _Record:
    """An inert object: keeps whatever state the pickle sets (DeepSpeed's LossScaler)."""

    def __init__(self, *args: Any):
        self.args = args


class _EnumValue:
    """An inert stand-in for an enum member pickled as Enum(value) (DeepSpeed's ZeroStageEnum)."""

    def __init__(self, value: Any):
        self.value = value

    def __int__(self) -> int:
        return int(self.value)


ALLOWED_FOREIGN = [
    (TensorReference, XSER_REFERENCE),
    (_Record, "deepspeed.runtime.fp16.loss_scaler.LossScaler"),
    (_Record, "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler"),
    (_EnumValue, "deepspeed.runtime.zero.config.ZeroStageEnum"),
]


def load_file(path: str) -> Any:
    """torch.load a user file on CPU with weights_only=True and the allow-list above."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path} is missing. The checkpoint is incomplete: copy the whole folder, or "
                              f"convert a complete checkpoint.")
    try:
        with torch.serialization.safe_globals(ALLOWED_FOREIGN):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} holds objects that are not plain tensors and are not on the allow-list "
                              f"({first}). It was not written by DeepSpeed, NeuronX Distributed or ScaleDown; "
                              f"refusing to unpickle it.") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path} could not be read ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
                              f"The file is damaged or truncated; copy it again or use an older checkpoint.") from None


def problem_with(path: str) -> Optional[str]:
    """Why a checkpoint file cannot be read (None: it can), cheaply: the safetensors header and sizes, a torch file's
    archive and pickle (tensors memory-mapped, not read; the allow-list above applies), or a JSON file's text."""
    if not os.path.lexists(path):
        return "is missing"
    if not os.path.isfile(path):
        return "is not a file"
    try:
        if path.endswith(".safetensors"):
            with safe_open(path, framework="pt") as f:
                f.keys()
        elif path.endswith(".json"):
            with open(path) as f:
                json.load(f)
        else:
            with torch.serialization.safe_globals(ALLOWED_FOREIGN):
                torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"holds objects that are not on the allow-list of checkpoint contents ({first[:160]})"
    except Exception as exc:  # safetensors, zip, JSON and OS errors all mean the same here: unreadable
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"is damaged or truncated ({type(exc).__name__}: {first[:160]})"
    return None


# ---- writing xser reference files without torch_xla ----------------------------------------------------
class _XserPickler(pickle._Pickler):  # the pure-Python pickler lets us name the stub class's global
    def save_global(self, obj, name=None):
        if obj is TensorReference:
            module, qualname = XSER_REFERENCE.rsplit(".", 1)
            self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[type] = save_global


class _XserPickleModule:
    """The `pickle_module` torch.save takes: standard pickle, with our Pickler."""
    Pickler = _XserPickler
    Unpickler = pickle.Unpickler
    dump = staticmethod(pickle.dump)
    load = staticmethod(pickle.load)
    __name__ = "pickle"


def save_with_references(obj: Any, path: str) -> None:
    """torch.save `obj` whose TensorReference stubs must read back as torch_xla's class (xser format)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer, pickle_module=_XserPickleModule, pickle_protocol=2)
    with open(path, "wb") as f:
        f.write(buffer.getvalue())
