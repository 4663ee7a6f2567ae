# Build each compressor type's backbone: n_layers (generator's first N layers), modernbert, causal_lm.
from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import AutoModel

from scaledown.config import ScaleDownConfig
from scaledown.errors import ConfigError
from scaledown.models import loading
from scaledown.models.compressor import Compressor, embedding_output_scale
from scaledown.models.generator import without_lora
from scaledown.models.sharded_weights import full_weights, whole


def decoder_base(causal_lm: nn.Module) -> nn.Module:
    """The headless decoder (embeddings + layers + norm) inside a *ForCausalLM."""
    base = getattr(causal_lm, "get_decoder", None)
    decoder = base() if callable(base) else None
    if decoder is None:
        decoder = getattr(causal_lm, causal_lm.base_model_prefix)
    return decoder


def truncated_config(config, num_layers: int):
    """A copy of a decoder config with only its first `num_layers` layers."""
    config = copy.deepcopy(config)
    config.num_hidden_layers = num_layers
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        config.layer_types = list(layer_types)[:num_layers]
    return config


def nlayers_backbone_from_generator(generator: nn.Module, num_layers: int) -> nn.Module:
    """OSCAR-N-Layers: a trainable copy of the generator's embeddings and first N layers, no final norm."""
    source = decoder_base(generator)
    total = len(source.layers)
    if num_layers > total:
        raise ConfigError(f"num_compressor_layers={num_layers} but the generator has only {total} decoder layers. "
                          f"Use at most {total} (OSCAR uses about a quarter: {max(1, total // 4)}).")
    backbone = loading.trainable_from_config(AutoModel, truncated_config(source.config, num_layers))
    copy_generator_layers(source, backbone)   # copy_ upcasts a bf16 generator's weights into the fp32 copy
    backbone.norm = nn.Identity()  # OSCAR (compr_rms_norm=False): last states stay in the layers' space
    return backbone


@torch.no_grad()
def copy_generator_layers(source: nn.Module, backbone: nn.Module) -> None:
    """Copy embeddings and the first len(backbone.layers) decoder layers of `source` into `backbone`.

    One module at a time: under a sharding backend only that module's weights are whole at once.
    """
    target_embed, source_embed = backbone.get_input_embeddings().weight, source.get_input_embeddings().weight
    with full_weights([source_embed]), full_weights([target_embed], modify=True):
        target_embed.copy_(source_embed)
    for target_layer, source_layer in zip(backbone.layers, source.layers):
        with full_weights(source_layer.parameters()), full_weights(target_layer.parameters(), modify=True):
            target_layer.load_state_dict(without_lora(source_layer.state_dict()))


def nlayers_backbone_empty(generator_config, num_layers: int) -> nn.Module:
    """Same architecture as nlayers_backbone_from_generator, randomly initialised (weights loaded later)."""
    backbone = loading.trainable_from_config(AutoModel, truncated_config(generator_config, num_layers))
    backbone.norm = nn.Identity()
    return backbone


@torch.no_grad()
def token_embedding_rms(generator: nn.Module) -> float:
    """Per-element RMS of the generator's token embeddings as its first decoder layer receives them (after the
    family's own input scaling, e.g. Gemma's sqrt(hidden)): the scale memory embeddings should start at."""
    embedding = generator.get_input_embeddings()
    weight = embedding.weight
    with full_weights([weight]):
        return float(whole(weight.detach()).float().pow(2).mean().sqrt()) * embedding_output_scale(embedding)


def build_compressor(config: ScaleDownConfig, generator: nn.Module, backbone: nn.Module | None = None,
                     seed: int | None = None) -> Compressor:
    """The compressor of `config.compressor_type`; `backbone` skips loading (from_pretrained passes it).

    seed: draw the fresh parts (memory tokens, heads, projection) from this seed, whatever building the backbone
    consumed (under ZeRO-3 it is initialised partitioned)."""
    out_size = generator.get_input_embeddings().embedding_dim
    norm_scale = None
    if config.memory_norm:  # per-element RMS of the generator's token embeddings
        norm_scale = token_embedding_rms(generator)
    kind = config.compressor_type
    if kind == "n_layers":
        if backbone is None:
            backbone = nlayers_backbone_from_generator(generator, config.num_compressor_layers)
        projection = "none"
    elif kind == "modernbert":
        if backbone is None:
            backbone = loading.load_encoder(config.resolved_compressor_model_name, config.trust_remote_code,
                                            dtype=loading.TRAINABLE_DTYPE)
        projection = "linear"
    elif kind == "causal_lm":
        if backbone is None:
            lm = loading.load_causal_lm(config.resolved_compressor_model_name, config.trust_remote_code,
                                        dtype=loading.TRAINABLE_DTYPE)
            backbone = decoder_base(lm)
        projection = "mlp"
    else:  # validated by ScaleDownConfig
        raise ConfigError(f"unknown compressor_type {kind!r}")
    projection = config.compressor_projection or projection   # a released N-layers model may carry an MLP
    if seed is not None:
        torch.manual_seed(seed)
    return Compressor(backbone, config.num_memory_tokens, out_size, projection=projection,
                      mlp_hidden_size=config.compressor_mlp_hidden_dim, enable_reranking=config.enable_reranking,
                      memory_norm_scale=norm_scale)
