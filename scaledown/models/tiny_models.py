# How a tiny sentinel model name (scaledown/presets.py) becomes a transformers config: offline, random weights.
"""Only model-loading code reads this (models/loading.py builds the model, its tokenizer comes from
models/tiny_tokenizer.py); everything else asks the config (`ScaleDownConfig.base_is_random`) or the model
(`generator_base_modified`).
"""
from __future__ import annotations

from typing import Any

from transformers import LlamaConfig, MistralConfig, ModernBertConfig

from scaledown.models.tiny_tokenizer import TINY_VOCAB_SIZE
from scaledown.presets import TINY_GENERATOR, TINY_LLAMA, TINY_MODERNBERT


def tiny_generator_config_dict() -> dict[str, Any]:
    """Mistral-shaped, shardable: 8 heads / 2 KV heads (GQA with KV < tp=8), MLP 512 and vocab 2048 divisible by 8."""
    return dict(
        vocab_size=TINY_VOCAB_SIZE,      # tokenizer (1,935 entries) padded up to a multiple of 8
        hidden_size=128,                 # 8 heads x 16: small enough to learn the synthetic task in minutes
        intermediate_size=256,           # MLP width (gate/up), divisible by 8
        num_hidden_layers=4,             # >= 4 so pipeline parallel can cut it
        num_attention_heads=8,
        num_key_value_heads=2,           # GQA: fewer KV heads than tp=8 exercises KV replication
        head_dim=16,
        max_position_embeddings=1024,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        sliding_window=None,
        tie_word_embeddings=False,       # untied (pipeline stages own embeddings and head); equal at init
        bos_token_id=1, eos_token_id=2, pad_token_id=3,
    )


def tiny_modernbert_config_dict() -> dict[str, Any]:
    return dict(
        vocab_size=TINY_VOCAB_SIZE, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=512, global_attn_every_n_layers=1,
        pad_token_id=3, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2,
    )


def tiny_llama_config_dict() -> dict[str, Any]:
    return dict(
        vocab_size=TINY_VOCAB_SIZE, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=1024,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=3,
    )


def tiny_model_config(name: str):
    """transformers config object of a tiny sentinel model."""
    if name == TINY_GENERATOR:
        return MistralConfig(**tiny_generator_config_dict())
    if name == TINY_MODERNBERT:
        return ModernBertConfig(**tiny_modernbert_config_dict())
    if name == TINY_LLAMA:
        return LlamaConfig(**tiny_llama_config_dict())
    raise KeyError(name)
