# Reading DCP checkpoints without unpickling arbitrary objects: an allow-list for .metadata, weights_only for bytes.
"""torch.distributed.checkpoint's FileSystemReader unpickles `.metadata` with plain pickle.load and its
DefaultLoadPlanner loads non-tensor entries with torch.load(weights_only=False): a crafted checkpoint folder could
run code. SafeReader unpickles the metadata through an allow-list of DCP's own metadata classes (and torch sizes and
dtypes); SafePlanner loads every non-tensor entry with torch.load(weights_only=True).
"""
from __future__ import annotations

import io
import pickle
from typing import Any

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import StorageMeta

from scaledown.errors import CheckpointError

# module -> names (None: every class of that DCP module: they are plain dataclasses describing chunks and files)
ALLOWED = {
    "torch.distributed.checkpoint.metadata": None,
    "torch.distributed.checkpoint.planner": None,
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.distributed.checkpoint._extension": None,
    "torch": {"Size", *(name for name in dir(torch) if isinstance(getattr(torch, name, None), torch.dtype))},
    "torch.serialization": {"_get_layout"},   # looks a tensor layout (torch.strided) up by name
    "pathlib": {"PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath"},   # StorageMeta.checkpoint_id
    "collections": {"OrderedDict"},
    "copyreg": {"_reconstructor", "__newobj__"},
    "builtins": {"object", "set", "frozenset", "tuple", "list", "dict", "int", "float", "str", "bytes", "bool"},
    "enum": {"Enum"},
}


class _AllowListUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = ALLOWED.get(module, set())
        if allowed is None or name in allowed:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not a DCP metadata class")


class SafeReader(FileSystemReader):
    """FileSystemReader whose metadata is unpickled through ALLOWED only."""

    def read_metadata(self, *args: Any, **kwargs: Any):
        path = self._get_metadata_path(kwargs.get("rank"))
        try:
            with self.fs.create_stream(path, "rb") as f:
                metadata = _AllowListUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
            raise CheckpointError(f"{path} is damaged or holds objects that are not checkpoint metadata "
                                  f"({type(exc).__name__}: {str(exc)[:160]}); refusing to unpickle it.") from None
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafePlanner(DefaultLoadPlanner):
    """DefaultLoadPlanner that reads non-tensor entries (optimizer step counts, hyper-parameters) weights_only
    (DefaultLoadPlanner.load_bytes, torch 2.13, with weights_only=True)."""

    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        try:
            loaded = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as exc:
            raise CheckpointError(f"checkpoint entry {read_item.dest_index.fqn} holds objects that are not plain "
                                  f"values ({str(exc).splitlines()[0][:160]}); refusing to unpickle it.") from None
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
        else:
            self.state_dict[read_item.dest_index.fqn] = loaded
