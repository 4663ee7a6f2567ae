# Reuse a saved compressor (e.g. a pretraining run's OUTPUT_DIR/final) with a new generator and a fresh LoRA.
"""A ScaleDown model folder keeps its compressor in Hugging Face conventions (`compressor/`:
config.json + model.safetensors + compressor_config.json, and `compressor_tokenizer/`). Here only
that part is loaded; the generator comes from the new run's config. Everything that must agree is
checked before any weights load, and each mismatch names the flag that fixes it:

    python train.py --init_compressor_from PRE/final --generator_model_name OTHER ...
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from safetensors.torch import load_file
from transformers import AutoTokenizer

from scaledown.config import ScaleDownConfig, fields_where
from scaledown.errors import CheckpointError, ConfigError
from scaledown.models import loading
from scaledown.models.serialization import load_compressor_backbone, read_saved_config, resolve_model_dir
from scaledown.models.sharded_weights import full_weights
from scaledown.text_files import load_json

# config fields that describe the compressor's architecture: a new run takes them from the saved folder
ARCHITECTURE_FIELDS = fields_where(compressor_reuse=True)
_FLAGS = {"compressor_type": "--compressor_type", "num_memory_tokens": "--num_memory_tokens",
          "compressor_mlp_hidden_dim": "--compressor_mlp_hidden_dim", "memory_norm": "--memory_norm"}


@dataclass
class SavedCompressor:
    model_dir: str               # the ScaleDown model folder holding compressor/
    settings: dict[str, Any]     # compressor/compressor_config.json
    config: ScaleDownConfig      # the saved model's config

    @property
    def directory(self) -> str:
        return os.path.join(self.model_dir, "compressor")

    def architecture(self) -> dict[str, Any]:
        """Config values a run must use to hold this compressor (the compressor's name resolved)."""
        values = {k: getattr(self.config, k) for k in ARCHITECTURE_FIELDS}
        values["compressor_model_name"] = self.config.resolved_compressor_model_name
        return values


def read_saved_compressor(directory: str) -> SavedCompressor:
    """A model folder, a run folder (its final/) or a model's compressor/ folder."""
    if os.path.isfile(os.path.join(directory, "compressor_config.json")):
        directory = os.path.dirname(os.path.abspath(directory))
    model_dir = resolve_model_dir(directory)
    path = os.path.join(model_dir, "compressor", "compressor_config.json")
    if not os.path.isfile(path):
        raise CheckpointError(f"{model_dir} has no compressor/compressor_config.json: it is not a complete ScaleDown "
                              f"model folder. Pass a folder written by save_pretrained (OUTPUT_DIR/final).")
    settings = load_json(path, CheckpointError)
    _, _, config = read_saved_config(model_dir)
    return SavedCompressor(model_dir, settings, config)


def check_fits(saved: SavedCompressor, config: ScaleDownConfig) -> None:
    """Clear errors, before any weights load, when the saved compressor cannot serve this run."""
    where = saved.directory
    for name, wanted in saved.architecture().items():
        if name == "compressor_model_name" or getattr(config, name) == wanted:
            continue
        raise ConfigError(f"{where} holds a compressor with {name}={wanted!r}, but this run sets {name}="
                          f"{getattr(config, name)!r}. Pass {_FLAGS[name]} {wanted} (or drop the flag: "
                          f"--init_compressor_from takes it from the saved compressor).")
    width = int(loading.model_config(config.generator_model_name, config.trust_remote_code).hidden_size)
    if int(saved.settings["output_size"]) != width:
        raise ConfigError(
            f"{where} maps documents into a {saved.settings['output_size']}-wide embedding space (it was trained for "
            f"generator '{saved.config.generator_model_name}'), but generator '{config.generator_model_name}' is "
            f"{width} wide. A compressor's projection fits one generator width: pretrain a compressor for this "
            f"generator (`python train.py --stage pretrain --generator_model_name {config.generator_model_name} "
            f"--compressor_type {config.compressor_type} ...`).")
    if config.compressor_type == "n_layers":  # it reads the generator's tokens: the vocabularies must agree
        saved_tok = loading.load_tokenizer(os.path.join(saved.model_dir, "tokenizer"))
        new_tok = loading.load_tokenizer(config.tokenizer_name or config.generator_model_name, config.trust_remote_code)
        if saved_tok.get_vocab() != new_tok.get_vocab():
            raise ConfigError(f"{where} is an n_layers compressor reading the tokens of '{saved.config.generator_model_name}'"
                              f", whose tokenizer differs from this generator's; reuse it only with a generator of the "
                              f"same tokenizer.")


def _reranking(key: str) -> bool:
    """The RR token and head: `memory_tokens.rr_embedding` (`rr_embedding` in older files) and `rr_head.*`."""
    return key.startswith("rr_head.") or key.split(".")[-1] == "rr_embedding"


def load_compressor_weights(model, saved: SavedCompressor) -> None:
    """Load compressor/model.safetensors into model.compressor; an RR head the run adds starts fresh."""
    state = load_file(os.path.join(saved.directory, "model.safetensors"))
    if not model.config.enable_reranking:  # a reranking head this run does not use
        state = {k: v for k, v in state.items() if not _reranking(k)}
    # ZeRO-3 built the backbone of a folder/hub generator partitioned (empty on every rank): gather, load, re-split
    with full_weights(model.compressor.parameters(), modify=True):
        missing, unexpected = model.compressor.load_state_dict(state, strict=False)
    missing = [k for k in missing if not _reranking(k)]
    if missing or unexpected:
        raise CheckpointError(f"{saved.directory}/model.safetensors does not fit the compressor this run builds "
                              f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}).")


def model_with_saved_compressor(cls, directory: str, config: ScaleDownConfig):
    """`cls(config)` (a ScaleDownModel) whose compressor and compressor tokenizer come from `directory`."""
    saved = read_saved_compressor(directory)
    check_fits(saved, config)
    tokenizer_dir = os.path.join(saved.model_dir, "compressor_tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir) if os.path.isdir(tokenizer_dir) else None
    backbone = load_compressor_backbone(config, saved.model_dir)
    model = cls(config, compressor_tokenizer=tokenizer, compressor_backbone=backbone)
    load_compressor_weights(model, saved)
    model.compressor_pretrained = True
    return model
