# Load tokenizers and base models by name: tiny offline sentinels, local folders or hub names.
from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator, Optional

import torch
import transformers
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from scaledown.errors import ConfigError
from scaledown.models import tiny_models
from scaledown.models.hub_access import hub_kwargs
from scaledown.models.tiny_tokenizer import load_tiny_tokenizer
from scaledown.presets import is_tiny_model
from scaledown.progress import show_progress

# Weights that train are kept in float32 whatever dtype a folder was saved in (transformers 5 loads dtype "auto": a
# bf16 checkpoint comes back bf16, and AutoModel.from_config builds in config.dtype): Adam's updates at 5e-5 round
# away in bf16 weights. Compute runs in bf16 under autocast; only frozen weights keep the saved dtype.
TRAINABLE_DTYPE = torch.float32


# A backend that fills weights itself after sharding them (the torch backend: backends/torch_native/meta_load.py)
# installs a deferrer while the model is built: deferrer(build, folder) runs build() (a from_config) with the
# parameters left on the meta device and notes that `folder` holds their weights (None: they are copied from another
# deferred model, the n_layers compressor). None (the default): folder models load their weights here.
Deferrer = Callable[[Callable[[], torch.nn.Module], Optional[str]], torch.nn.Module]
_deferrer: Optional[Deferrer] = None


@contextlib.contextmanager
def deferred_weights(deferrer: Optional[Deferrer]) -> Iterator[None]:
    """Install `deferrer` for the block (None: load weights here, e.g. while a saved ScaleDown folder loads)."""
    global _deferrer
    previous, _deferrer = _deferrer, deferrer
    try:
        yield
    finally:
        _deferrer = previous


def _deferred(auto_class, folder: str, dtype, trust_remote_code: bool, num_hidden_layers: Optional[int] = None):
    """The folder's architecture built by the installed deferrer (weights left to it), in from_pretrained's mode."""
    config = model_config(folder, trust_remote_code)
    if num_hidden_layers is not None:
        config.num_hidden_layers = num_hidden_layers
    model = _deferrer(lambda: auto_class.from_config(config, trust_remote_code=trust_remote_code,
                                                     **dtype_kwargs(dtype)), folder)
    try:   # from_pretrained reads generation_config.json too (answers' eos / pad ids)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config = GenerationConfig.from_pretrained(folder)
    except OSError:
        pass
    return model.eval()   # from_pretrained gives eval mode


def dtype_kwargs(dtype) -> dict:
    """The weights-dtype keyword of from_config / from_pretrained: `dtype` since transformers 4.56, `torch_dtype`
    before (the Neuron stack's 4.48); {} for None."""
    if dtype is None:
        return {}
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": dtype}


def trainable_from_config(auto_class, config):
    """`auto_class.from_config(config)` with float32 weights (a config read from a bf16 folder says bfloat16)."""
    if _deferrer is not None:   # the n_layers compressor: its weights are the deferred generator's first layers
        return _deferrer(lambda: auto_class.from_config(config, **dtype_kwargs(TRAINABLE_DTYPE)), None)
    return auto_class.from_config(config, **dtype_kwargs(TRAINABLE_DTYPE))


def load_tokenizer(name: str, trust_remote_code: bool = False):
    """Tokenizer for a model name; the tiny sentinels and their saved folders load offline."""
    if is_tiny_model(name):
        return load_tiny_tokenizer()
    try:
        tok = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code, **hub_kwargs(name, "tokenizer"))
    except OSError as exc:
        raise ConfigError(_not_found(name, "tokenizer", exc)) from None
    except ValueError as exc:
        raise _remote_code_refused(name, exc) from None
    if tok.pad_token is None:  # Llama/Mistral ship without one; padding positions are masked anyway
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok


def check_tokenizer_fits(tokenizer, name: str, trust_remote_code: bool = False, role: str = "generator") -> None:
    """Refuse a tokenizer with more tokens than the model has embedding rows (special tokens added without
    resize_token_embeddings): otherwise the first prompt holding one fails mid-run with an index error."""
    if is_tiny_model(name) or tokenizer is None:
        return
    config = model_config(name, trust_remote_code)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    rows = getattr(text, "vocab_size", None)
    if rows is None or len(tokenizer) <= rows:
        return
    extra = [t for t, i in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]) if i >= rows][:3]
    raise ConfigError(f"the {role} tokenizer of '{name}' has {len(tokenizer)} tokens but the model has {rows} "
                      f"embedding rows: {', '.join(map(repr, extra))} have no embedding. Resize the model to its "
                      f"tokenizer and save it first (model.resize_token_embeddings(len(tokenizer)); "
                      f"model.save_pretrained(FOLDER)), or pass the tokenizer the model was saved with.")


def match_progress_policy() -> None:
    """transformers draws a "Loading weights" bar on every from_pretrained; ScaleDown draws bars only on a terminal
    (scaledown/progress.py), so a log file under SLURM or `> run.log` gets no carriage-return frames from it either."""
    if show_progress():
        transformers.utils.logging.enable_progress_bar()
    else:
        transformers.utils.logging.disable_progress_bar()


def load_causal_lm(name: str, trust_remote_code: bool = False, dtype: Optional[torch.dtype] = None,
                   num_hidden_layers: Optional[int] = None):
    """A causal LM: tiny sentinels are built randomly from config (seeded by the caller); others load weights.

    `dtype`: the loaded weights' dtype (TRAINABLE_DTYPE for a model that trains); None keeps the saved dtype
    (transformers 5's "auto"). The random tiny sentinels are always float32.
    """
    if is_tiny_model(name):
        config = tiny_models.tiny_model_config(name)
        if num_hidden_layers is not None:
            config.num_hidden_layers = num_hidden_layers
        model = AutoModelForCausalLM.from_config(config)   # float32 (the sentinels' configs name no dtype)
        head, embed = model.get_output_embeddings(), model.get_input_embeddings()
        if head is not None and head.weight is not embed.weight:
            with torch.no_grad():  # untied but equal at init: copying a context token to the output is easy
                head.weight.copy_(embed.weight)
        return model
    if _deferrer is not None and os.path.isdir(name):
        return _deferred(AutoModelForCausalLM, name, dtype, trust_remote_code, num_hidden_layers)
    kwargs = {"trust_remote_code": trust_remote_code, **hub_kwargs(name), **dtype_kwargs(dtype)}
    if num_hidden_layers is not None:  # loads only the first N decoder layers' weights
        kwargs["num_hidden_layers"] = num_hidden_layers
    match_progress_policy()
    try:
        return AutoModelForCausalLM.from_pretrained(name, **kwargs)
    except OSError as exc:
        raise ConfigError(_not_found(name, "model", exc)) from None
    except ValueError as exc:
        raise _remote_code_refused(name, exc) from None


def load_encoder(name: str, trust_remote_code: bool = False, dtype: Optional[torch.dtype] = None):
    """A bidirectional encoder (ModernBERT and the like) without its task head; `dtype` as in load_causal_lm."""
    if is_tiny_model(name):
        return AutoModel.from_config(tiny_models.tiny_model_config(name))
    if _deferrer is not None and os.path.isdir(name):
        return _deferred(AutoModel, name, dtype, trust_remote_code)
    match_progress_policy()
    try:
        return AutoModel.from_pretrained(name, trust_remote_code=trust_remote_code, **hub_kwargs(name),
                                         **dtype_kwargs(dtype))
    except OSError as exc:
        raise ConfigError(_not_found(name, "model", exc)) from None
    except ValueError as exc:
        raise _remote_code_refused(name, exc) from None


def load_pretrained(auto_class, name: str, trust_remote_code: bool = False, **kwargs):
    """Weights of a hub model or local folder through any transformers Auto class, with a clear error if missing."""
    match_progress_policy()
    try:
        return auto_class.from_pretrained(name, trust_remote_code=trust_remote_code, **{**hub_kwargs(name), **kwargs})
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
    return fresh_attention_choice(AutoConfig.from_pretrained(folder))


def model_config(name: str, trust_remote_code: bool = False):
    """The transformers config of a model name, without loading weights."""
    if is_tiny_model(name):
        return tiny_models.tiny_model_config(name)
    try:
        return fresh_attention_choice(AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code,
                                                                 **hub_kwargs(name, "config")))
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
