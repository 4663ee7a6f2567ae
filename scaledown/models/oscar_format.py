# Read NAVER's released OSCAR checkpoints (naver/oscar-*: COCOM remote-code format) natively, without their code.
"""A released folder holds (the reference modelling file's COCOM.save_pretrained):

    config.json                      COCOMConfig fields (decoder_model_name, doc_max_length, compr_rate, ...)
    adapters.pth                     {"decoder_adapter": PEFT LoRA state dict of the generator}
    decoder_first_last_layers.pth    generator embedding and LM-head rows, grown by <MEM..>, <AE>, <ENC>, <SEP>
    compressor/compressor.pth        the compressor backbone's state dict (vocabulary grown by <MEM0>..)
    compressor/mlp.pth               Linear-ReLU-Linear into the generator's space (when compr_use_mlp)

Every .pth loads with torch.load(weights_only=True); nothing from the folder runs. The base generator (and a
separate compressor's config and tokenizer) load by the names in config.json, or from local folders given as
generator_path / compressor_path. Every file and shape is checked before the models are built; a mismatch
raises CheckpointError naming the file and the config.json field.
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional

import torch

from scaledown.config import ScaleDownConfig
from scaledown.errors import CheckpointError
from scaledown.models import loading
from scaledown.models.oscar_build import build_released_model
from scaledown.models.oscar_files import (ADAPTERS, COMPRESSOR, FIRST_LAST, MLP, TRIMMED, TRIMMED_PREFIX,  # noqa: F401
                                          is_released_folder)
from scaledown.models.oscar_paths import base_names, check_base_models
from scaledown.models.oscar_prompt import RELEASED_SYSTEM_PROMPT, compressor_memory_tokens, decoder_added_tokens


def read_released_config(folder: str) -> dict[str, Any]:
    """config.json, checked for what ScaleDown supports (OSCAR-llama and OSCAR-N-Layers; not PISCO)."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path} is missing: a released OSCAR folder needs config.json (its COCOMConfig), "
                              f"{ADAPTERS}, {FIRST_LAST}, {COMPRESSOR} (and {MLP} when compr_use_mlp is true). "
                              f"Download the complete model folder.")
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} cannot be read as JSON ({exc}); the released folder is damaged.") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path} holds a JSON {type(cfg).__name__}, not the object of a COCOMConfig; the released "
                              f"folder is damaged: download config.json again.")
    for name in ("decoder_model_name", "doc_max_length", "compr_rate", "lora_r"):
        if cfg.get(name) is None:
            raise CheckpointError(f"{path} has no '{name}': it is not a complete COCOMConfig of a released OSCAR model.")
    for name in ("doc_max_length", "compr_rate", "lora_r", "compr_n_layers", "compr_mlp_hidden_dim"):
        value = cfg.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise CheckpointError(f"{path}: {name}={value!r} must be a whole number, written as the released configs "
                                  f"write it: \"{name}\": {_whole_number_hint(value)}.")
    if cfg.get("compr_model_name") is None:
        raise CheckpointError(f"{path}: compr_model_name is null, so this is a PISCO model (the generator compresses "
                              f"with an encoder_adapter). ScaleDown reads OSCAR models (a separate or N-layers "
                              f"compressor) only; PISCO is not supported.")
    unsupported = [(name, why) for name, bad, why in (
        ("lora", not cfg.get("lora", False), "a full (non-LoRA) generator"),
        ("lora_compressor", cfg.get("lora_compressor", False), "a LoRA-adapted compressor"),
        ("compr_every_n_layer", cfg.get("compr_every_n_layer") is not None, "every-n-th-layer trimming"),
        ("compr_rms_norm", cfg.get("compr_rms_norm", False), "a final RMS norm in the N-layers compressor"),
        ("sep", not cfg.get("sep", False), "prompts without <SEP> (the released prompt always has it)"),
        ("quantization", cfg.get("quantization", "no") not in ("no", None), "quantized weights"),
    ) if bad]
    if unsupported:
        name, why = unsupported[0]
        raise CheckpointError(f"{path}: {name}={cfg.get(name)!r} means {why}, which ScaleDown's reader does not "
                              f"support (released OSCAR models use lora=true, lora_compressor=false, sep=true, "
                              f"compr_every_n_layer=null, compr_rms_norm=false).")
    for name in ("compr_rate", "doc_max_length", "lora_r"):
        if cfg[name] < 1:
            raise CheckpointError(f"{path}: {name}={cfg[name]} must be a positive whole number (the released models "
                                  f"write e.g. \"compr_rate\": 16, \"doc_max_length\": 128, \"lora_r\": 16).")
    if cfg["doc_max_length"] % cfg["compr_rate"]:
        raise CheckpointError(f"{path}: doc_max_length={cfg['doc_max_length']} is not a multiple of "
                              f"compr_rate={cfg['compr_rate']}; the memory-token count doc_max_length // compr_rate "
                              f"would not cover a document.")
    return cfg


def _whole_number_hint(value: Any) -> str:
    """The value to write instead of `value` when it plainly means a whole number ("16", 16.0), else a placeholder."""
    text = str(value).strip()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and text.isdigit():
        return text
    return "<a whole number>"


def load_pth(folder: str, name: str) -> dict:
    """torch.load(weights_only=True) of one released file, with a clear error if missing or damaged."""
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path} is missing: a released OSCAR folder needs config.json, {ADAPTERS}, "
                              f"{FIRST_LAST}, {COMPRESSOR} (and {MLP} when compr_use_mlp is true). Download the "
                              f"complete model folder.")
    try:
        try:   # memory-mapped: checking a 7B folder's shapes reads headers, not gigabytes
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)   # legacy (non-zip) torch.save file
    except Exception as exc:   # truncated download, or a pickle holding code (refused by weights_only)
        raise CheckpointError(f"{path} cannot be loaded with torch.load(weights_only=True) ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); the file is damaged or holds more "
                              f"than tensors.") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict.")
    bad = _non_tensor(state)
    if bad:
        key, value = bad
        raise CheckpointError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor; a released file holds "
                              f"tensors by name only (adapters.pth: by adapter name, then by tensor name). The file "
                              f"is damaged or was not written by the released model.")
    return state


def _non_tensor(state: dict, prefix: str = "") -> Optional[tuple[str, Any]]:
    """The first (dotted key, value) of a nested state dict that is neither a tensor nor a dict, or None."""
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            found = _non_tensor(value, name + ".")
            if found:
                return found
        elif not isinstance(value, torch.Tensor):
            return name, value
    return None


def _rows(state: dict, suffix: str, path: str) -> torch.Tensor:
    keys = [k for k in state if k.endswith(suffix)]
    if len(keys) != 1:
        raise CheckpointError(f"{path} has {len(keys)} tensors named *{suffix} (expected one): not a released file.")
    return state[keys[0]]


def released_tokenizers(cfg: dict[str, Any], generator_name: str, compressor_name: str):
    """(generator tokenizer, its base size, tokens added, compressor tokenizer, its base size): the base tokenizers
    grown as the reference grows them (<MEM..>, <AE>, <ENC>, <SEP> in the generator; <MEM0>.. in the compressor)."""
    n = cfg["doc_max_length"] // cfg["compr_rate"]
    tokenizer = loading.load_tokenizer(generator_name)
    base_vocab = len(tokenizer)
    added = decoder_added_tokens(n, bool(cfg.get("different_mem_tokens", False)))
    tokenizer.add_special_tokens({"additional_special_tokens": added})
    compressor_tokenizer = loading.load_tokenizer(compressor_name)
    comp_base_vocab = len(compressor_tokenizer)
    compressor_tokenizer.add_special_tokens({"additional_special_tokens": compressor_memory_tokens(n)})
    return tokenizer, base_vocab, len(added), compressor_tokenizer, comp_base_vocab


class ReleasedOscar:
    """A released folder read and checked: config, tensors, tokenizers and base model names (no model built)."""

    def __init__(self, folder: str, generator_path: Optional[str] = None, compressor_path: Optional[str] = None):
        self.folder = folder
        cfg = self.cfg = read_released_config(folder)
        self.trimmed = cfg["compr_model_name"] == TRIMMED
        self.n = cfg["doc_max_length"] // cfg["compr_rate"]
        self.use_mlp = bool(cfg.get("compr_use_mlp", True))
        for name in (ADAPTERS, FIRST_LAST, COMPRESSOR) + ((MLP,) if self.use_mlp else ()):
            if not os.path.isfile(os.path.join(folder, name)):
                load_pth(folder, name)   # raises the missing-file message
        self.generator_name, self.compressor_name = check_base_models(folder, cfg, generator_path, compressor_path)
        self.tokenizer, base_vocab, n_added, self.compressor_tokenizer, comp_base_vocab = released_tokenizers(
            cfg, self.generator_name, self.compressor_name)
        self.memory_ids = self.compressor_tokenizer.convert_tokens_to_ids(compressor_memory_tokens(self.n))
        self.generator_config = loading.model_config(self.generator_name)
        self.compressor_config = self.generator_config if self.trimmed else loading.model_config(self.compressor_name)
        self.first_last = load_pth(folder, FIRST_LAST)
        self.adapters = load_pth(folder, ADAPTERS)
        self.compressor = load_pth(folder, COMPRESSOR)
        self.mlp = load_pth(folder, MLP) if self.use_mlp else None
        self._check_shapes(base_vocab, n_added, comp_base_vocab)

    def _check_shapes(self, base_vocab: int, n_added: int, comp_base_vocab: int) -> None:
        cfg, folder = self.cfg, self.folder
        first_last = os.path.join(folder, FIRST_LAST)
        rows = _rows(self.first_last, "embed_tokens.weight", first_last).shape[0]
        if rows != len(self.tokenizer):
            raise CheckpointError(
                f"{first_last} has {rows} embedding rows, but the tokenizer of {self.generator_name} ({base_vocab}) plus "
                f"the {n_added} tokens config.json implies (doc_max_length={cfg['doc_max_length']} // compr_rate="
                f"{cfg['compr_rate']} = {self.n} memory tokens, different_mem_tokens="
                f"{cfg.get('different_mem_tokens', False)}) makes {len(self.tokenizer)}. config.json does not match "
                f"the weights, or decoder_model_name names another tokenizer.")
        comp_path = os.path.join(folder, COMPRESSOR)
        embed_key = (TRIMMED_PREFIX if self.trimmed else "") + "embed_tokens.weight"
        if embed_key not in self.compressor:
            raise CheckpointError(f"{comp_path} has no '{embed_key}': it is not the state dict of a "
                                  f"{'mistral_trimmed' if self.trimmed else 'causal LM'} compressor as config.json's "
                                  f"compr_model_name={cfg['compr_model_name']!r} says.")
        comp_rows, comp_hidden = self.compressor[embed_key].shape
        if comp_rows - comp_base_vocab != self.n:
            raise CheckpointError(
                f"{comp_path} has {comp_rows} embedding rows = the {comp_base_vocab} tokens of {self.compressor_name} "
                f"+ {comp_rows - comp_base_vocab} memory-token rows, but config.json's doc_max_length="
                f"{cfg['doc_max_length']} // compr_rate={cfg['compr_rate']} gives {self.n} memory tokens.")
        if self.trimmed:
            layers = {int(k.split(".")[3]) for k in self.compressor if k.startswith(TRIMMED_PREFIX + "layers.")}
            if len(layers) != cfg.get("compr_n_layers"):
                raise CheckpointError(f"{comp_path} holds {len(layers)} decoder layers but config.json says "
                                      f"compr_n_layers={cfg.get('compr_n_layers')}.")
        adapters_path = os.path.join(folder, ADAPTERS)
        extra = sorted(set(self.adapters) - {"decoder_adapter"})
        if "decoder_adapter" not in self.adapters or extra:
            raise CheckpointError(f"{adapters_path} holds adapters {sorted(self.adapters)}; an OSCAR model has exactly "
                                  f"'decoder_adapter' (an 'encoder_adapter' is PISCO's, not supported).")
        ranks = {v.shape[0] for k, v in self.adapters["decoder_adapter"].items() if "lora_A" in k}
        if ranks != {cfg["lora_r"]}:
            raise CheckpointError(f"{adapters_path}: the LoRA A matrices have rank {sorted(ranks)} but config.json "
                                  f"says lora_r={cfg['lora_r']}.")
        out = self.generator_config.hidden_size
        if self.mlp is not None:
            mlp_path = os.path.join(folder, MLP)
            if set(self.mlp) != {"0.weight", "0.bias", "2.weight", "2.bias"}:
                raise CheckpointError(f"{mlp_path} has keys {sorted(self.mlp)}; expected the two linear layers "
                                      f"0.weight/0.bias and 2.weight/2.bias.")
            width = self.mlp["0.weight"].shape[0]
            if width != cfg.get("compr_mlp_hidden_dim"):
                raise CheckpointError(f"{mlp_path}: the MLP is {width} wide but config.json says compr_mlp_hidden_dim="
                                      f"{cfg.get('compr_mlp_hidden_dim')}.")
            if tuple(self.mlp["0.weight"].shape[1:]) != (comp_hidden,) or self.mlp["2.weight"].shape[0] != out:
                raise CheckpointError(f"{mlp_path} maps {self.mlp['0.weight'].shape[1]} -> "
                                      f"{self.mlp['2.weight'].shape[0]}, but the compressor is {comp_hidden} wide and "
                                      f"the generator {self.generator_name} {out}.")
        elif comp_hidden != out:
            raise CheckpointError(f"config.json: compr_use_mlp=false, but the compressor ({comp_hidden}) and the "
                                  f"generator ({out}) differ in width; {MLP} is needed.")

    def scaledown_values(self) -> dict[str, Any]:
        """The ScaleDownConfig fields of this model."""
        return scaledown_values(self.cfg, self.generator_name, self.compressor_name)


def scaledown_values(cfg: dict[str, Any], generator_name: str, compressor_name: str) -> dict[str, Any]:
    """ScaleDownConfig fields of a released config.json (checked by read_released_config)."""
    use_mlp = bool(cfg.get("compr_use_mlp", True))
    values = dict(doc_max_length=cfg["doc_max_length"], compression_rate=cfg["compr_rate"],
                  generator_model_name=generator_name, lora_r=cfg["lora_r"], lora_alpha=2 * cfg["lora_r"],
                  lora_dropout=0.1, lora_target_modules="all-linear", memory_norm=False, enable_reranking=False,
                  compressor_mlp_hidden_dim=cfg.get("compr_mlp_hidden_dim") or 8096,
                  compressor_projection="mlp" if use_mlp else "none", prompt_format="oscar",
                  system_prompt=RELEASED_SYSTEM_PROMPT)
    if cfg["compr_model_name"] == TRIMMED:
        values.update(compressor_type="n_layers", num_compressor_layers=cfg["compr_n_layers"])
    else:
        values.update(compressor_type="causal_lm", compressor_model_name=compressor_name)
    return values


def released_config(folder: str, generator_path: Optional[str] = None, compressor_path: Optional[str] = None,
                     check: bool = False):
    """The ScaleDownConfig of a released folder from its config.json (no tensors or tokenizers read), its base
    models named by the paths if given, else by config.json. check: also resolve both base models (ConfigError naming
    --generator_path / --compressor_path when one cannot be loaded) and check every file's tensor shapes against
    config.json (CheckpointError naming the file and field; the .pth files are memory-mapped, not read whole), so
    a command stops before any data or model work."""
    cfg = read_released_config(folder)
    if check:
        released = ReleasedOscar(folder, generator_path, compressor_path)
        generator, compressor = released.generator_name, released.compressor_name
    else:
        generator, compressor, _ = base_names(cfg, generator_path, compressor_path)
    return ScaleDownConfig.from_dict(scaledown_values(cfg, generator, compressor),
                                     source=os.path.join(folder, "config.json"))


def load_released(cls, folder: str, generator_path: Optional[str] = None, compressor_path: Optional[str] = None,
                  dtype: Optional[torch.dtype] = None, **overrides: Any):
    """A ScaleDownModel (`cls`) with the released model's weights and input formats (prompt_format='oscar').

    dtype: of every weight (default float32; the reference computes in bfloat16). `overrides`: ScaleDownConfig
    fields; enable_reranking=True adds a fresh RR token and head (the released models have none).
    """
    released = ReleasedOscar(folder, generator_path, compressor_path)
    return build_released_model(cls, released, dtype or torch.float32, overrides)
