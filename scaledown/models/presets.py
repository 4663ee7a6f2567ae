# Named presets and the offline tiny models they build (no hub download needed).
from __future__ import annotations

from typing import Any

from scaledown.errors import ConfigError

# Sentinel model names resolved here instead of on the hub.
TINY_GENERATOR = "scaledown-tiny-mistral"
TINY_MODERNBERT = "scaledown-tiny-modernbert"
TINY_LLAMA = "scaledown-tiny-llama"
TINY_MODELS = (TINY_GENERATOR, TINY_MODERNBERT, TINY_LLAMA)


def tiny_generator_config_dict() -> dict[str, Any]:
    """Mistral-shaped, shardable: 8 heads / 2 KV heads (GQA with KV < tp=8), MLP 512 and vocab 2048 divisible by 8."""
    from scaledown.models.tiny_tokenizer import TINY_VOCAB_SIZE
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
    from scaledown.models.tiny_tokenizer import TINY_VOCAB_SIZE
    return dict(
        vocab_size=TINY_VOCAB_SIZE, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=512, global_attn_every_n_layers=1,
        pad_token_id=3, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2,
    )


def tiny_llama_config_dict() -> dict[str, Any]:
    from scaledown.models.tiny_tokenizer import TINY_VOCAB_SIZE
    return dict(
        vocab_size=TINY_VOCAB_SIZE, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=1024,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=3,
    )


def tiny_model_config(name: str):
    """transformers config object of a tiny sentinel model."""
    from transformers import LlamaConfig, MistralConfig, ModernBertConfig
    if name == TINY_GENERATOR:
        return MistralConfig(**tiny_generator_config_dict())
    if name == TINY_MODERNBERT:
        return ModernBertConfig(**tiny_modernbert_config_dict())
    if name == TINY_LLAMA:
        return LlamaConfig(**tiny_llama_config_dict())
    raise KeyError(name)


# Fields the tiny preset changes; everything else keeps OSCAR's default. Each value says why.
_TINY: dict[str, Any] = {
    "generator_model_name": TINY_GENERATOR,
    "doc_max_length": 32,                 # synthetic documents are ~20 tokens
    "compression_rate": 8,                # 32 tokens -> 4 memory embeddings (about 5 real tokens each)
    "query_max_length": 24,
    "answer_max_length": 8,               # answers are one word + </s>
    "num_compressor_layers": 2,           # half of the 4-layer generator
    "system_prompt": None,                # short prompts: the tiny model gains nothing from it
    "num_documents_train": 3,
    "num_documents_eval": 3,
    "batch_size": 32,
    "max_steps": 1600,                    # all phases together
    "generator_warmup_ratio": 0.25,       # a random generator must first learn RAG on uncompressed text
    "learning_rate_generator_warmup": 1e-3,
    "learning_rate_generator": 1e-3,      # tiny random models want larger steps than a 7B
    "learning_rate_compressor_nlayers": 2e-3,
    "learning_rate_compressor_llama": 2e-3,
    "learning_rate_compressor_modernbert": 2e-3,
    "enable_reranking": True,             # the RR head learns which document is about the queried entity
    "reranking_loss_weight": 1.0,         # ... and that signal is what lets the tiny model pick documents
    "memory_norm": True,                  # memory vectors at the scale of token embeddings
    "weight_decay": 0.0,
    "lora_dropout": 0.0,
    "gradient_checkpointing": False,      # activations are small; recomputation only costs time
    "use_bf16": False,                    # CPU bf16 is slower than fp32 at this size
    "logging_steps": 20,
    "eval_steps": 200,
    "save_steps": 200,
    "eval_max_examples": 200,
    "max_new_tokens": 4,
}

PRESETS: dict[str, dict[str, Any]] = {"tiny": _TINY}

# Values that belong to the built-in synthetic task, not to the model: its schedule (1,600 steps of a fresh row
# each) and its lengths (one-word answers, short questions). With the user's own data they keep their defaults.
SYNTHETIC_TASK_FIELDS = ("max_steps", "answer_max_length", "query_max_length", "max_new_tokens")


def preset_overrides(name: str, user_data: bool = False) -> dict[str, Any]:
    """The preset's values; user_data=True leaves out SYNTHETIC_TASK_FIELDS (a run on the user's files)."""
    if name not in PRESETS:
        raise ConfigError(f"preset={name!r} is unknown. Available presets: {', '.join(sorted(PRESETS))}.")
    values = dict(PRESETS[name])
    if user_data:
        for key in SYNTHETIC_TASK_FIELDS:
            values.pop(key, None)
    return values
