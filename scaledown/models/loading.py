# Load tokenizers and base models by name: tiny offline sentinels, local folders or hub names.
from __future__ import annotations

import os
from typing import Optional

import torch

from scaledown.errors import ConfigError
from scaledown.models import presets


def load_tokenizer(name: str, trust_remote_code: bool = False):
    """Tokenizer for a model name; the tiny sentinels and their saved folders load offline."""
    if name in presets.TINY_MODELS:
        from scaledown.models.tiny_tokenizer import load_tiny_tokenizer
        return load_tiny_tokenizer()
    from transformers import AutoTokenizer
    try:
        tok = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise ConfigError(_not_found(name, "tokenizer", exc)) from None
    except ValueError as exc:
        raise _remote_code_refused(name, exc) from None
    if tok.pad_token is None:  # Llama/Mistral ship without one; padding positions are masked anyway
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok


def load_causal_lm(name: str, trust_remote_code: bool = False, dtype: Optional[torch.dtype] = None,
                   num_hidden_layers: Optional[int] = None):
    """A causal LM: tiny sentinels are built randomly from config (seeded by the caller); others load weights."""
    from transformers import AutoModelForCausalLM
    if name in presets.TINY_MODELS:
        config = presets.tiny_model_config(name)
        if num_hidden_layers is not None:
            config.num_hidden_layers = num_hidden_layers
        model = AutoModelForCausalLM.from_config(config)
        head, embed = model.get_output_embeddings(), model.get_input_embeddings()
        if head is not None and head.weight is not embed.weight:
            with torch.no_grad():  # untied but equal at init: copying a context token to the output is easy
                head.weight.copy_(embed.weight)
        return model
    kwargs = {"trust_remote_code": trust_remote_code}
    if num_hidden_layers is not None:  # loads only the first N decoder layers' weights
        kwargs["num_hidden_layers"] = num_hidden_layers
    try:
        model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    except OSError as exc:
        raise ConfigError(_not_found(name, "model", exc)) from None
    except ValueError as exc:
        raise _remote_code_refused(name, exc) from None
    return model.to(dtype) if dtype is not None else model


def load_encoder(name: str, trust_remote_code: bool = False):
    """A bidirectional encoder (ModernBERT and the like) without its task head."""
    from transformers import AutoModel
    if name in presets.TINY_MODELS:
        return AutoModel.from_config(presets.tiny_model_config(name))
    try:
        return AutoModel.from_pretrained(name, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise ConfigError(_not_found(name, "model", exc)) from None
    except ValueError as exc:
        raise _remote_code_refused(name, exc) from None


def load_pretrained(auto_class, name: str, trust_remote_code: bool = False, **kwargs):
    """Weights of a hub model or local folder through any transformers Auto class, with a clear error if missing."""
    try:
        return auto_class.from_pretrained(name, trust_remote_code=trust_remote_code, **kwargs)
    except OSError as exc:
        raise ConfigError(_not_found(name, "model", exc)) from None
    except ValueError as exc:
        raise _remote_code_refused(name, exc) from None


def fresh_attention_choice(config):
    """Let transformers choose the attention implementation again for a config read back from disk.

    transformers 4.48 writes `_attn_implementation_autoset: true` into config.json; a model built from such a
    config skips the choice and runs eager attention where the model that was saved ran SDPA, so its outputs
    differ in the last bits. Newer releases have no such attribute and are left alone.
    """
    if getattr(config, "_attn_implementation_autoset", False):
        config._attn_implementation_autoset = False
    return config


def saved_config(folder: str):
    """The transformers config of a saved model folder (config.json), ready to build a model from."""
    from transformers import AutoConfig
    return fresh_attention_choice(AutoConfig.from_pretrained(folder))


def model_config(name: str, trust_remote_code: bool = False):
    """The transformers config of a model name, without loading weights."""
    if name in presets.TINY_MODELS:
        return presets.tiny_model_config(name)
    from transformers import AutoConfig
    try:
        return fresh_attention_choice(AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code))
    except OSError as exc:
        raise ConfigError(_not_found(name, "config", exc)) from None
    except ValueError as exc:
        raise _remote_code_refused(name, exc) from None


def _remote_code_refused(name: str, exc: ValueError) -> Exception:
    """transformers' refusal to run a model's own code, as one paragraph (other ValueErrors pass unchanged)."""
    if "trust_remote_code" not in str(exc):
        return exc
    return ConfigError(f"'{name}' needs its own code to load (its config maps to custom classes, auto_map), and "
                       f"remote code was not allowed. ScaleDown runs such code only when you pass --trust_remote_code "
                       f"on this command (trust_remote_code=True in Python); a value saved in a model folder or "
                       f"checkpoint does not count. Inspect the code in that folder before allowing it.")


def _not_found(name: str, what: str, exc: Exception) -> str:
    where = "local folder" if os.path.isdir(name) else "hub model"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (f"could not load the {what} of {where} '{name}' ({first}). Check the name or path; offline, "
            f"download it first or use the offline tiny preset (--preset tiny).")
