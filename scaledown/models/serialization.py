# save_pretrained / from_pretrained in Hugging Face conventions (safetensors, PEFT adapter, model folders).
"""Layout of a saved ScaleDown model (`D/final/`):

    scaledown_config.json     ScaleDownConfig + format marker + what the other folders hold
    generator_adapter/        PEFT LoRA adapter (adapter_config.json, adapter_model.safetensors)
    generator_base/           base generator (config.json, model.safetensors, tokenizer) -- only when its
                              weights differ from `generator_model_name` on the hub (random tiny, warm-up)
    compressor/               config.json (backbone) + model.safetensors (backbone, memory tokens,
                              projection, RR head) + compressor_config.json
    tokenizer/                generator tokenizer;  compressor_tokenizer/ for a separate compressor

Writes go to a temporary folder renamed into place when complete: a reader never sees half a model.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any, Optional

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

from scaledown.atomic_files import commit_directory, staging_directory
from scaledown.config import ScaleDownConfig, config_from_saved
from scaledown.errors import CheckpointError
from scaledown.models import loading
from scaledown.models.compressor_builders import build_compressor
from scaledown.models.generator import base_causal_lm, quiet_peft_wrapping, without_lora
from scaledown.models.loading import saved_config, trainable_from_config
from scaledown.models.sharded_weights import full_weights
from scaledown.models.tied_weights import drop_aliases, tied_aliases
from scaledown.text_files import load_json

FORMAT = "scaledown-model"
FORMAT_VERSION = 1
CONFIG_FILE = "scaledown_config.json"


def clean_base_state_dict(generator: nn.Module, generator_state: Optional[dict[str, torch.Tensor]] = None
                          ) -> dict[str, torch.Tensor]:
    """The base causal LM's weights with peft's LoRA layers taken out (`q_proj.base_layer.weight` -> `q_proj.weight`).

    `generator_state`: a full state dict of `generator` to take the tensors from instead of the module.
    Tied weights (tie_word_embeddings) appear once, under the input embedding's name, as Hugging Face saves them.
    """
    lm = base_causal_lm(generator)
    aliases = tied_aliases(lm, rename=lambda name: next(iter(without_lora({name: None}))))
    if generator_state is None:
        return drop_aliases(without_lora(lm.state_dict()), aliases)
    prefix = next((name + "." for name, module in generator.named_modules() if module is lm and name), "")
    return drop_aliases(without_lora({k[len(prefix):]: v for k, v in generator_state.items() if k.startswith(prefix)}),
                        aliases)


def save_pretrained(model, directory: str, include_base: Optional[bool] = None,
                    state_dict: Optional[dict[str, torch.Tensor]] = None,
                    generator_state_dict: Optional[dict[str, torch.Tensor]] = None) -> None:
    """Write `model` to `directory`.

    `state_dict` (the compressor's) and `generator_state_dict` (the peft generator's), full and unsharded,
    override the modules' own tensors: sharding backends gather them and write from one rank.
    """

    include_base = model.generator_base_modified if include_base is None else include_base
    tmp = staging_directory(directory)
    try:
        final_abs = os.path.abspath(directory)
        # -- generator adapter (standard PEFT folder)
        adapter_kwargs = {} if generator_state_dict is None else {"state_dict": generator_state_dict}
        model.generator.save_pretrained(os.path.join(tmp, "generator_adapter"), **adapter_kwargs)
        base_ref = model.config.generator_model_name
        if include_base:
            base_dir = os.path.join(tmp, "generator_base")
            lm = base_causal_lm(model.generator)
            lm.config.save_pretrained(base_dir)
            save_file(_contiguous(clean_base_state_dict(model.generator, generator_state_dict)),
                      os.path.join(base_dir, "model.safetensors"), metadata={"format": "pt"})
            save_tokenizer(model.tokenizer, base_dir)
            base_ref = os.path.join(final_abs, "generator_base")
        _set_adapter_base(os.path.join(tmp, "generator_adapter"), base_ref)
        # -- compressor folder
        comp_dir = os.path.join(tmp, "compressor")
        os.makedirs(comp_dir)
        model.compressor.backbone.config.to_json_file(os.path.join(comp_dir, "config.json"))
        comp_state = drop_aliases(state_dict if state_dict is not None else model.compressor.state_dict(),
                                  tied_aliases(model.compressor))
        save_file(_contiguous(comp_state), os.path.join(comp_dir, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(comp_dir, "compressor_config.json"), "w") as f:
            json.dump({"compressor_type": model.config.compressor_type,
                       "num_memory_tokens": model.config.num_memory_tokens,
                       "enable_reranking": model.config.enable_reranking,
                       "memory_norm": model.config.memory_norm,
                       "output_size": int(model.generator.get_input_embeddings().embedding_dim)}, f, indent=2)
        # -- tokenizers and the top-level config
        save_tokenizer(model.tokenizer, os.path.join(tmp, "tokenizer"))
        if model.compressor_tokenizer is not None:
            save_tokenizer(model.compressor_tokenizer, os.path.join(tmp, "compressor_tokenizer"))
        with open(os.path.join(tmp, CONFIG_FILE), "w") as f:
            json.dump({"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_dict(),
                       "generator_base": "generator_base" if include_base else model.config.generator_model_name},
                      f, indent=2, sort_keys=True)
        commit_directory(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_tokenizer(tokenizer, directory: str) -> None:
    """save_pretrained, naming transformers 5's generic fast tokenizer by its 4.x name (PreTrainedTokenizerFast,
    an alias in 5), so the Neuron stack's transformers 4.48 loads what a transformers 5 run saved."""
    tokenizer.save_pretrained(directory)
    path = os.path.join(directory, "tokenizer_config.json")
    with open(path) as f:
        settings = json.load(f)
    if settings.get("tokenizer_class") == "TokenizersBackend":
        settings["tokenizer_class"] = "PreTrainedTokenizerFast"
        with open(path, "w") as f:
            json.dump(settings, f, indent=2, ensure_ascii=False)


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def _set_adapter_base(adapter_dir: str, base_ref: str) -> None:
    path = os.path.join(adapter_dir, "adapter_config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg["base_model_name_or_path"] = base_ref
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)


def resolve_model_dir(directory: str) -> str:
    """`D/final` or `D` (a run folder): the folder holding scaledown_config.json, or a clear error."""
    for candidate in (directory, os.path.join(directory, "final")):
        if os.path.isfile(os.path.join(candidate, CONFIG_FILE)):
            return candidate
    if not os.path.isdir(directory):
        raise CheckpointError(f"{directory} does not exist. Pass a folder written by save_pretrained "
                              f"(a training run's OUTPUT_DIR/final).")
    raise CheckpointError(f"{directory} is not a ScaleDown model: it has no {CONFIG_FILE}. Pass a folder written "
                          f"by ScaleDownModel.save_pretrained (a training run's OUTPUT_DIR/final); to start from a "
                          f"plain Hugging Face model use generator_model_name instead.")


def read_saved_config(directory: str, trust_remote_code: bool = False, **overrides: Any
                      ) -> tuple[str, dict, ScaleDownConfig]:
    """(folder, scaledown_config.json, config): `overrides` win over the saved settings; a saved
    trust_remote_code is ignored (only the caller's `trust_remote_code` counts, config.config_from_saved)."""
    directory = resolve_model_dir(directory)
    path = os.path.join(directory, CONFIG_FILE)
    try:
        meta = load_json(path, CheckpointError)   # UTF-8 with or without a BOM
    except (OSError, ValueError, CheckpointError) as exc:
        raise CheckpointError(f"{path} could not be read ({type(exc).__name__}: {str(exc)[:160]}). The model folder "
                              f"is damaged: copy it again, or save the model again.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{path} is not a ScaleDown model config (format="
                              f"{meta.get('format') if isinstance(meta, dict) else None!r}).")
    values = {**meta["config"], **overrides}
    return directory, meta, config_from_saved(values, path, trust_remote_code)


def load_compressor_backbone(config: ScaleDownConfig, directory: str) -> nn.Module:
    backbone = trainable_from_config(AutoModel, saved_config(os.path.join(directory, "compressor")))
    if config.compressor_type == "n_layers":
        backbone.norm = nn.Identity()
    return backbone


def load_pretrained(cls, directory: str, **overrides: Any):

    directory, meta, config = read_saved_config(directory, **overrides)
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(directory, "tokenizer"))
    comp_tok_dir = os.path.join(directory, "compressor_tokenizer")
    compressor_tokenizer = AutoTokenizer.from_pretrained(comp_tok_dir) if os.path.isdir(comp_tok_dir) else None
    base_dir = os.path.join(directory, "generator_base")
    if os.path.isdir(base_dir):
        loading.match_progress_policy()
        base = AutoModelForCausalLM.from_pretrained(base_dir, config=loading.saved_config(base_dir))
    else:
        base = loading.load_causal_lm(config.generator_model_name, config.trust_remote_code)
    with quiet_peft_wrapping():
        generator = PeftModel.from_pretrained(base, os.path.join(directory, "generator_adapter"), is_trainable=True)
    for name, p in generator.named_parameters():
        p.requires_grad_("lora_" in name)
    compressor = build_compressor(config, base, backbone=load_compressor_backbone(config, directory))
    state = load_file(os.path.join(directory, "compressor", "model.safetensors"))
    with full_weights(compressor.parameters(), modify=True):  # ZeRO-3 built the backbone partitioned
        missing, unexpected = compressor.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{directory}/compressor/model.safetensors does not match the configured compressor "
                              f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}). Was it saved "
                              f"with another compressor_type or num_memory_tokens?")
    model = cls(config, generator=generator, compressor=compressor, tokenizer=tokenizer,
                compressor_tokenizer=compressor_tokenizer)
    model.generator_base_modified = os.path.isdir(base_dir)
    return model
