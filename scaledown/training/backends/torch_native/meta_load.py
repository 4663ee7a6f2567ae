# Folder (hub-style) generators built on the meta device, sharded, then filled rank by rank from their safetensors.
"""No rank ever holds the whole model: `MetaBuild.build` constructs ScaleDownModel with every weight that comes from a
folder left on the meta device (scaledown.models.loading's deferrer hook); the backend applies TP / fully_shard as
for a full build; `load_weights` then materialises each rank's local shards (Module.to_empty) and reads only that
rank's slice of each tensor from the safetensors files (safetensors safe_open / get_slice), one tensor at a time.

The compressor's projection (an MLP of up to 8096 x width per Linear, not in the files) stays on meta too and each
rank draws only its shard from the seed's stream (fresh_draws.py). The small rest that is not in the files (LoRA A/B,
memory tokens, reranking head) and every buffer (rotary inv_freq, Gemma's embed_scale) is built for real by the
model's own code with its own seeds, so it equals the full build's. Statistics the build takes of loaded weights
(the memory tokens' scale, memory_norm's init) read the whole tensor from the files through the sharded_weights
gatherer hook, one tensor at a time.

APIs: torch.distributed.fsdp.fully_shard (to_empty after meta init), torch.distributed.tensor (DTensor placements,
distribute_tensor), safetensors.safe_open (https://huggingface.co/docs/safetensors), the transformers
save_pretrained layout (model.safetensors or model.safetensors.index.json + model-0000i-of-0000n.safetensors).
"""
from __future__ import annotations

import contextlib
import json
import os
import warnings
from typing import Callable, Iterator, Optional

import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor
from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

from scaledown.errors import ConfigError
from scaledown.models import loading
from scaledown.models.compressor_builders import decoder_base
from scaledown.models.fresh_weights import use_fresh_maker
from scaledown.models.sharded_weights import use_gatherer
from scaledown.training.backends.torch_native.fresh_draws import Draw, FreshDraws, drawn

Source = tuple[str, str]   # (folder, tensor name in its safetensors files)


class WeightFiles:
    """The safetensors files of save_pretrained folders, opened once each; reads whole tensors or slices."""

    def __init__(self):
        self._index: dict[str, dict[str, str]] = {}
        self._open = contextlib.ExitStack()
        self._handles: dict[str, object] = {}

    def close(self) -> None:
        self._open.close()

    def _map(self, folder: str) -> dict[str, str]:
        if folder not in self._index:
            self._index[folder] = _weight_map(folder)
        return self._index[folder]

    def key(self, folder: str, name: str, prefix: str) -> str:
        """The file's name for parameter `name` of a model whose base_model_prefix is `prefix`: a headless model
        (AutoModel) read from a folder saved with its head has `prefix.` before every name, and the reverse
        (as transformers' from_pretrained matches them)."""
        names = self._map(folder)
        tried = [name] if not prefix else [name, f"{prefix}.{name}", name.removeprefix(prefix + ".")]
        for key in tried:
            if key in names:
                return key
        return name   # absent: `has` says so

    def has(self, folder: str, key: str) -> bool:
        return key in self._map(folder)

    def _file(self, folder: str, key: str) -> str:
        name = self._map(folder).get(key)
        if name is None:
            raise ConfigError(f"the weights of '{folder}' hold no tensor '{key}' that its model needs: the folder "
                              f"does not match its config.json. Save the model again with save_pretrained.")
        return os.path.join(folder, name)

    def read(self, source: Source, index: Optional[tuple[slice, ...]] = None) -> torch.Tensor:
        """The tensor `source` names, whole (index None) or only `index` of it (a slice per dimension)."""
        path = self._file(*source)
        try:
            if path not in self._handles:
                self._handles[path] = self._open.enter_context(safe_open(path, framework="pt"))
            handle = self._handles[path]
            return handle.get_tensor(source[1]) if index is None else handle.get_slice(source[1])[index]
        except (OSError, SafetensorError, RuntimeError) as exc:
            raise ConfigError(f"cannot read '{source[1]}' from {path} ({exc}): the file is missing or damaged. Copy "
                              f"the model folder again (or save it again with save_pretrained).") from None


def _weight_map(folder: str) -> dict[str, str]:
    """tensor name -> file name of a save_pretrained folder (sharded: its model.safetensors.index.json)."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        try:
            with open(index) as f:
                return dict(json.load(f)["weight_map"])
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"cannot read {index} ({exc}): copy the model folder again or save it again with "
                              f"save_pretrained.") from None
    single = os.path.join(folder, "model.safetensors")
    if not os.path.isfile(single):
        raise ConfigError(f"'{folder}' has no model.safetensors or model.safetensors.index.json: the torch backend "
                          f"loads folder models from safetensors. Save it with save_pretrained(folder) "
                          f"(safe_serialization, the default).")
    try:
        with safe_open(single, framework="pt") as f:
            return {key: "model.safetensors" for key in f.keys()}
    except (OSError, SafetensorError) as exc:
        raise ConfigError(f"cannot read {single} ({exc}): the file is damaged. Copy the model folder again.") from None


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Parameters registered inside are moved to the meta device as they are registered (the trick of
    accelerate's init_empty_weights(include_buffers=False)): each is allocated once, uninitialised, then dropped;
    buffers (rotary inv_freq, embed_scale) stay real, computed as in a full build."""
    register = nn.Module.register_parameter

    def on_meta(module, name, param):
        register(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = type(param)(param.to("meta"), requires_grad=param.requires_grad)
    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


@contextlib.contextmanager
def _modules_stay_off_meta() -> Iterator[None]:
    """peft moves each new LoRA layer to its base layer's device (Module.to), which for a meta base would drop its
    seeded values: inside, Module.to keeps real weights where they are (a dtype cast still happens)."""
    to = nn.Module.to

    def to_off_meta(module, *args, **kwargs):
        device, dtype, non_blocking, _ = torch._C._nn._parse_to(*args, **kwargs)
        if device is not None and device.type == "meta":
            return module if dtype is None else to(module, dtype=dtype, non_blocking=non_blocking)
        return to(module, *args, **kwargs)
    nn.Module.to = to_off_meta
    try:
        yield
    finally:
        nn.Module.to = to


class MetaBuild:
    """One model built with its folder weights on the meta device; `sources` maps parameter names to files."""

    def __init__(self):
        self.files = WeightFiles()
        self._by_id: dict[int, Source] = {}   # id(meta parameter) -> where its values are, while building
        self._last_folder_model: Optional[nn.Module] = None
        self.sources: dict[str, Source] = {}  # the built model's parameter names -> where their values are
        self.fresh = FreshDraws()              # the projection's Linears: drawn shard by shard after sharding
        self.draws: dict[str, Draw] = {}       # the built model's parameter names -> the draw that gives them

    def build(self, build: Callable[[], nn.Module]) -> nn.Module:
        """Run `build` (e.g. lambda: ScaleDownModel(config)) with folder weights deferred; raises if a parameter is
        left on the meta device with no file to fill it from."""
        with loading.deferred_weights(self._defer), _modules_stay_off_meta(), use_gatherer(self._gather), \
                use_fresh_maker(self.fresh.building), warnings.catch_warnings():
            # the n_layers copy (load_state_dict into the meta compressor layers) is a no-op: the files hold it
            warnings.filterwarnings("ignore", message=r".*copying from a non-meta parameter .* to a meta parameter")
            model = build()
        for name, param in model.named_parameters():
            if param.device.type == "meta":
                if id(param) in self.fresh.by_id:
                    self.draws[name] = self.fresh.by_id[id(param)]
                elif id(param) in self._by_id:
                    self.sources[name] = self._by_id[id(param)]
                else:
                    raise RuntimeError(f"meta build: parameter {name} has no weights file to load from")
        self._by_id.clear()
        self.fresh.by_id.clear()
        return model

    def _defer(self, make: Callable[[], nn.Module], folder: Optional[str]) -> nn.Module:
        with _parameters_on_meta():
            module = make()
        if folder is not None:
            self._last_folder_model = module
            prefix, absent = getattr(module, "base_model_prefix", ""), {}
            for name, param in module.named_parameters():
                key = self.files.key(folder, name, prefix)
                if self.files.has(folder, key):
                    self._by_id[id(param)] = (folder, key)
                else:   # e.g. BERT's pooler, saved without: initialised as from_pretrained does (_init_weights)
                    torch.utils.swap_tensors(param, nn.Parameter(torch.empty_like(param, device="cpu"),
                                                                 param.requires_grad))
                    absent[id(param)] = name.rpartition(".")[0]
            if absent:   # as from_pretrained says "newly initialized"
                warnings.warn(f"{folder}: {len(absent)} weights are not in its files and start fresh "
                              f"({', '.join(sorted(set(absent.values())))})", stacklevel=2)
            for owner in dict.fromkeys(absent.values()):
                module._init_weights(module.get_submodule(owner))
            return module
        # the n_layers compressor: the generator's embeddings and first layers under the same names (its decoder's)
        decoder = decoder_base(self._last_folder_model) if self._last_folder_model is not None else None
        for key, param in module.named_parameters():
            source = None if decoder is None else _get(decoder, key)
            if source is not None and id(source) in self._by_id:
                self._by_id[id(param)] = self._by_id[id(source)]
        return module

    @contextlib.contextmanager
    def _gather(self, params, modify: bool) -> Iterator[None]:
        # model code reading whole weights while building: read from the files one tensor at a time; edits of
        # meta weights (the n_layers copy) are skipped, the files hold what they would copy
        # (swap_tensors: .data cannot move a tensor off meta in place; the parameter object stays the same)
        filled = [] if modify else [p for p in params if p.device.type == "meta" and id(p) in self._by_id]
        held = [nn.Parameter(self.files.read(self._by_id[id(p)]).to(p.dtype), p.requires_grad) for p in filled]
        for param, value in zip(filled, held):
            torch.utils.swap_tensors(param, value)
        try:
            yield
        finally:
            for param, value in zip(filled, held):
                torch.utils.swap_tensors(param, value)


def _get(module: nn.Module, name: str) -> Optional[nn.Parameter]:
    try:
        return module.get_parameter(name)
    except AttributeError:
        return None


def local_part(param: torch.Tensor) -> tuple[torch.Tensor, Optional[tuple[slice, ...]]]:
    """(this rank's local tensor of `param`, its index into the global tensor) for a plain tensor or a DTensor whose
    placements are Shard / Replicate; index None where the local part is not one block (strided shards)."""
    if not isinstance(param, DTensor):
        return param, tuple(slice(0, n) for n in param.shape)
    local = param.to_local()
    if not all(type(p) in (Shard, Replicate) for p in param.placements):
        return local, None
    shape, offset = compute_local_shape_and_global_offset(param.shape, param.device_mesh, param.placements)
    return local, tuple(slice(o, o + n) for o, n in zip(offset, shape))


@torch.no_grad()
def fill_parameter(param: torch.Tensor, read: Callable[[Optional[tuple[slice, ...]]], torch.Tensor]) -> None:
    """Copy this rank's part into the materialised `param` (a DTensor's local tensor or a plain tensor); `read(index)`
    gives the slice `index` of the whole tensor (None: all of it; only that part is read where the layout allows)."""
    local, index = local_part(param)
    if index is None:   # strided shards (FSDP over TP on one dim): the whole tensor, sliced locally, no messages
        whole = read(None).to(param.dtype)
        local.copy_(distribute_tensor(whole, param.device_mesh, param.placements, src_data_rank=None).to_local())
    elif local.numel():
        local.copy_(read(index or None))


@torch.no_grad()
def load_weights(model: nn.Module, build: MetaBuild, device: torch.device,
                 on_tensor: Optional[Callable[[], None]] = None, root: Optional[nn.Module] = None) -> None:
    """Materialise the sharded meta parameters of `model` on `device` and fill each from the files, a tensor at a
    time. Real tensors (fresh parts, buffers) keep their values. `on_tensor` is called after each tensor (tests
    measure resident elements there). `root`: the FSDP2 root that wraps `model` (a pipeline stage), materialised
    whole so FSDP2 re-registers every shard it manages. Parameters a pipeline cut removed are not `model`'s any
    more and are never read. Raises ConfigError naming a missing or damaged file."""
    keep = {name: (t.to_local() if isinstance(t, DTensor) else t).detach().clone()
            for name, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type != "meta"}
    (root or model).to_empty(device=device)   # every parameter and buffer: the real ones are put back below
    for name, param in model.named_parameters():
        if name in keep:
            (param.to_local() if isinstance(param, DTensor) else param).copy_(keep.pop(name))
    for name, value in keep.items():   # buffers: plain tensors, set back whole
        owner, _, attr = name.rpartition(".")
        model.get_submodule(owner)._buffers[attr] = value.to(device)
    try:
        for name, param in model.named_parameters():
            if name in build.sources:
                fill_parameter(param, lambda index: build.files.read(build.sources[name], index))
            elif name in build.draws:
                fill_parameter(param, lambda index: drawn(param.shape, param.dtype, build.draws[name], index))
            else:
                continue
            if on_tensor is not None:
                on_tensor()
    finally:
        build.files.close()
