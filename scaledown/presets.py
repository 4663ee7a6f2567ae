# Named presets as plain data, below the config: the values a preset sets and the tiny sentinel model names.
"""`ScaleDownConfig(preset="tiny")` and `ScaleDownConfig.from_dict({"preset": "tiny", ...})` both take their values
from preset_values() here. The sentinel names (TINY_GENERATOR ...) stand for offline random models: only
model-loading code (models/loading.py, models/tiny_models.py) knows how a name becomes a model; other code asks
`ScaleDownConfig.base_is_random`. This module imports nothing of the package but its errors.
"""
from __future__ import annotations

from typing import Any, Iterable

from scaledown.errors import ConfigError

# Sentinel model names resolved offline (models/tiny_models.py) instead of on the hub.
TINY_GENERATOR = "scaledown-tiny-mistral"
TINY_MODERNBERT = "scaledown-tiny-modernbert"
TINY_LLAMA = "scaledown-tiny-llama"
TINY_MODELS = (TINY_GENERATOR, TINY_MODERNBERT, TINY_LLAMA)
# the tiny generator's separate compressors, by compressor_type (offline too)
TINY_COMPRESSORS = {"modernbert": TINY_MODERNBERT, "causal_lm": TINY_LLAMA}


def is_tiny_model(name: str | None) -> bool:
    """Whether `name` is one of the offline random sentinel models (not a hub name or a folder)."""
    return name in TINY_MODELS


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


def preset_values(name: str, given: Iterable[str] = (), user_data: bool = False) -> dict[str, Any]:
    """The values preset `name` gives a config whose caller set `given` fields itself (those keep their value).

    The one rule for every way a config is built (constructor, from_dict, files, flags)."""
    given = set(given)
    return {k: v for k, v in preset_overrides(name, user_data).items() if k not in given}
