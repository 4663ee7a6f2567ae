# Tied parameters (tie_word_embeddings: the LM head IS the input embedding): written once, tied again on load.
"""Generators such as Llama-3.2-1B, Qwen2.5 and Gemma ship with `tie_word_embeddings=True`: `lm_head.weight` and
`embed_tokens.weight` are one Parameter, so a state dict lists one tensor under two names. safetensors refuses
tensors that share memory ("Some tensors share memory"), and a copy written under both names would load as two
weights that then train apart. The rule, for every writer and reader of weights here:

* writers drop the aliases (every name of a shared parameter but the first in `named_parameters` order, which is
  the input embedding for Hugging Face causal LMs), as Hugging Face's own save_pretrained does;
* readers accept a file without the aliases: the model they load into ties the parameters itself (transformers
  ties from the config's tie_word_embeddings), so loading the embedding sets the head;
* checks of "missing" weights treat an alias whose canonical name is present as present.

Aliases are found by parameter identity on the module, never by tensor storage, so they hold for meta skeletons
and for weights gathered from ZeRO-3 partitions (separate copies) alike.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from scaledown.errors import ConfigError


def tied_aliases(module: nn.Module, rename: Optional[Callable[[str], str]] = None) -> dict[str, str]:
    """{alias name: canonical name} of every parameter reachable under several names; `rename` maps both."""
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        canonical = first.setdefault(id(param), name)
        if canonical != name:
            aliases[name] = canonical
    if rename is not None:
        aliases = {rename(a): rename(c) for a, c in aliases.items()}
    return aliases


def drop_aliases(state: dict[str, torch.Tensor], aliases: dict[str, str]) -> dict[str, torch.Tensor]:
    """The state dict without tied aliases whose canonical tensor it holds (what a safetensors file may hold)."""
    return {k: v for k, v in state.items() if not (k in aliases and aliases[k] in state)}


def with_aliases(state: dict[str, torch.Tensor], aliases: dict[str, str]) -> dict[str, torch.Tensor]:
    """The state dict with every tied alias filled from its canonical tensor (for writers that need every name)."""
    out = dict(state)
    for alias, canonical in aliases.items():
        if alias not in out and canonical in out:
            out[alias] = out[canonical]
    return out


def untied_names(model: nn.Module) -> list[str]:
    """Names of parameters that shared one weight in the model's config but are separate Parameters now (a tie
    that a sharding or loading step broke): each would train apart from its twin. Empty when all ties hold."""
    broken = []
    for lm in model.modules():
        config = getattr(lm, "config", None)
        get_out = getattr(lm, "get_output_embeddings", None)
        if config is None or not callable(get_out) or not getattr(config, "tie_word_embeddings", False):
            continue
        head, embed = get_out(), lm.get_input_embeddings()
        if head is not None and embed is not None and head.weight is not embed.weight:
            broken.append(type(lm).__name__)
    return broken


def retie(module: nn.Module, aliases: dict[str, str]) -> None:
    """Make every alias name refer to its canonical Parameter again (after modules or parameters were replaced:
    tensor-parallel layers swapped in, load_state_dict(assign=True)). Shapes must agree."""
    for alias, canonical in aliases.items():
        target = module.get_parameter(canonical)
        owner_path, _, attr = alias.rpartition(".")
        owner = module.get_submodule(owner_path) if owner_path else module
        current = getattr(owner, attr)
        if current is target:
            continue
        if tuple(current.shape) != tuple(target.shape):
            raise ConfigError(f"{alias} is tied to {canonical} (tie_word_embeddings) but they now have shapes "
                              f"{tuple(current.shape)} and {tuple(target.shape)}: they cannot stay one weight.")
        setattr(owner, attr, target)
