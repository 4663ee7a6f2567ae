# Build a ScaleDownModel from a checked released OSCAR folder (models/oscar_format.ReleasedOscar).
"""Where each released tensor goes:

    decoder_first_last_layers.pth  -> the generator's embedding and LM head, resized to the grown tokenizer
    adapters.pth["decoder_adapter"] -> the generator's PEFT LoRA (all-linear, alpha = 2r, as the reference)
    compressor.pth embed rows of <MEM0>.. -> Compressor.memory_tokens (ScaleDown appends them as embeddings)
    compressor.pth everything else  -> the compressor backbone (a 'mistral_trimmed' one: its custom_model.model.*)
    mlp.pth                        -> Compressor.projection (0.* and 2.*: the same Sequential indices)
"""
from __future__ import annotations

import os
import sys
from typing import Any

import torch
from peft import set_peft_model_state_dict
from transformers import AutoModel

from scaledown.config import ScaleDownConfig
from scaledown.errors import CheckpointError
from scaledown.models import loading
from scaledown.models.compressor import Compressor
from scaledown.models.compressor_builders import nlayers_backbone_empty
from scaledown.models.generator import build_generator
from scaledown.models.oscar_files import ADAPTERS, COMPRESSOR, FIRST_LAST, TRIMMED_PREFIX
from scaledown.models.sharded_weights import full_weights


def _strict_load(module: torch.nn.Module, state: dict, path: str, what: str) -> None:
    try:
        with full_weights(module.parameters(), modify=True):   # ZeRO-3 builds the backbone partitioned
            missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:   # size mismatches: the weights are not of the architecture config.json names
        detail = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc)[:200])
        raise CheckpointError(f"{path} does not fit {what}: {detail}. config.json names another architecture than "
                              f"the weights'.") from None
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit {what} (missing {sorted(missing)[:4]}, unexpected "
                              f"{sorted(unexpected)[:4]}); config.json names another architecture than the weights'.")


def _generator(released, config, dtype: torch.dtype):
    base = loading.load_causal_lm(released.generator_name, dtype=dtype)
    base.resize_token_embeddings(len(released.tokenizer), mean_resizing=False)
    own = base.state_dict()
    rows = {}
    for key, value in released.first_last.items():   # names as the reference's decoder.named_parameters()
        if key not in own or own[key].shape != value.shape:
            raise CheckpointError(f"{os.path.join(released.folder, FIRST_LAST)}: '{key}' {tuple(value.shape)} does not "
                                  f"fit {released.generator_name} ({tuple(own[key].shape) if key in own else 'absent'}).")
        rows[key] = value.to(dtype)
    with full_weights([p for n, p in base.named_parameters() if n in rows], modify=True):
        base.load_state_dict(rows, strict=False)
    generator = build_generator(config, base=base)
    adapter = {"base_model.model." + k: v.to(dtype) for k, v in released.adapters["decoder_adapter"].items()}
    result = set_peft_model_state_dict(generator, adapter)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{os.path.join(released.folder, ADAPTERS)} does not fit LoRA on all linear layers of "
                              f"{released.generator_name} (missing {missing[:3]}, unexpected "
                              f"{list(result.unexpected_keys)[:3]}).")
    return generator


def _backbone(released, dtype: torch.dtype):
    """The compressor backbone from compressor.pth (vocabulary as saved, memory rows included) and its memory rows."""
    path = os.path.join(released.folder, COMPRESSOR)
    if released.trimmed:
        backbone = nlayers_backbone_empty(released.generator_config, released.cfg["compr_n_layers"])
        state = {k[len(TRIMMED_PREFIX):]: v for k, v in released.compressor.items() if k.startswith(TRIMMED_PREFIX)}
        leftover = [k for k in released.compressor if not k.startswith(TRIMMED_PREFIX) and k != "custom_model.lm_head.weight"]
        if leftover:
            raise CheckpointError(f"{path} has unexpected tensors {leftover[:4]} for a mistral_trimmed compressor.")
    else:
        backbone = AutoModel.from_config(released.compressor_config)
        state = dict(released.compressor)
    backbone.resize_token_embeddings(state["embed_tokens.weight"].shape[0], mean_resizing=False)
    _strict_load(backbone, {k: v.to(dtype) for k, v in state.items()}, path, f"the {released.compressor_name} backbone")
    memory = state["embed_tokens.weight"][released.memory_ids].to(dtype)
    return backbone.to(dtype), memory


def build_released_model(cls, released, dtype: torch.dtype, overrides: dict[str, Any]):
    """The ScaleDownModel of a ReleasedOscar; `overrides` are ScaleDownConfig fields (training settings)."""
    values = released.scaledown_values()
    values.update(overrides)
    config = ScaleDownConfig.from_dict(values, source=f"{released.folder}/config.json")
    generator = _generator(released, config, dtype)
    backbone, memory = _backbone(released, dtype)
    compressor = Compressor(backbone, config.num_memory_tokens, generator.get_input_embeddings().embedding_dim,
                            projection=config.compressor_projection, mlp_hidden_size=config.compressor_mlp_hidden_dim,
                            enable_reranking=config.enable_reranking)
    with torch.no_grad(), full_weights([compressor.memory_tokens.memory_embeddings], modify=True):
        compressor.memory_tokens.memory_embeddings.copy_(memory)
        if released.mlp is not None:
            compressor.projection.load_state_dict({k: v.to(dtype) for k, v in released.mlp.items()})
    compressor.to(dtype)
    if config.enable_reranking:
        print(f"note: {released.folder} has no reranking head (released OSCAR models carry none); the RR token and "
              f"the reranking head start fresh.", file=sys.stderr, flush=True)
    model = cls(config, generator=generator, compressor=compressor, tokenizer=released.tokenizer,
                compressor_tokenizer=None if released.trimmed else released.compressor_tokenizer)
    model.generator_base_modified = True   # embedding / head rows grown and trained: saved with the model
    return model
