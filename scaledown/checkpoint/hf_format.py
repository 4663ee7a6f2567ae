# The Hugging Face side: read / write the ScaleDownModel.save_pretrained folder (models/serialization.py format).
"""Reading maps the folder's safetensors files onto ScaleDownModel names without building the model:

    generator_adapter/adapter_model.safetensors   base_model.model.<path>.lora_A.weight -> generator.<..>.lora_A.default.weight
    generator_base/model.safetensors              <plain HF name>   -> generator.base_model.model.<..>(.base_layer).weight
    compressor/model.safetensors                  <compressor name> -> compressor.<name>

Writing goes through models/serialization.save_pretrained with a meta-device model and the full state dict,
so the output is exactly what ScaleDownModel.from_pretrained reads. An HF folder holds no optimizer state.
"""
from __future__ import annotations

import os

from safetensors.torch import load_file

from scaledown.checkpoint.description import ModelDescription, read_json
from scaledown.checkpoint.full import FullCheckpoint
from scaledown.config import ScaleDownConfig
from scaledown.errors import CheckpointError
from scaledown.models import loading
from scaledown.models.generator import base_causal_lm, without_lora
from scaledown.models.serialization import read_saved_config, save_pretrained

ADAPTER_NAME = "default"


def _peft_key(name: str) -> str:
    """ScaleDownModel LoRA name -> key in a saved PEFT adapter file."""
    return name[len("generator."):].replace(f".lora_A.{ADAPTER_NAME}.", ".lora_A.").replace(
        f".lora_B.{ADAPTER_NAME}.", ".lora_B.")


def _base_prefix(model) -> str:
    lm = base_causal_lm(model.generator)
    return next(name for name, m in model.named_modules() if m is lm) + "."


def describe_folder(directory: str, trust_remote_code: bool = False) -> tuple[str, ModelDescription]:
    directory, _, config = read_saved_config(directory, trust_remote_code=trust_remote_code)
    base_config = read_json(os.path.join(directory, "generator_base", "config.json"))
    if base_config is None:
        base_config = loading.model_config(config.generator_model_name, config.trust_remote_code).to_dict()
    compressor_config = read_json(os.path.join(directory, "compressor", "config.json"))
    if compressor_config is None:
        raise CheckpointError(f"{directory}/compressor/config.json is missing: the folder is incomplete. Export the "
                              f"model again (ScaleDownModel.save_pretrained).")
    return directory, ModelDescription(config, base_config, compressor_config)


def read_hf(path: str, trust_remote_code: bool = False) -> FullCheckpoint:
    directory, description = describe_folder(path, trust_remote_code)
    model = description.skeleton()
    names = list(model.state_dict())
    prefix = _base_prefix(model)
    by_file = {
        os.path.join("generator_adapter", "adapter_model.safetensors"):
            {_peft_key(n): n for n in names if n.startswith("generator.") and "lora_" in n},
        os.path.join("generator_base", "model.safetensors"):
            {next(iter(without_lora({n[len(prefix):]: None}))): n for n in names
             if n.startswith(prefix) and "lora_" not in n},
        os.path.join("compressor", "model.safetensors"):
            {n[len("compressor."):]: n for n in names if n.startswith("compressor.")},
    }
    weights = {}
    for relative, mapping in by_file.items():
        file = os.path.join(directory, relative)
        if not os.path.isfile(file):
            if relative.startswith("generator_base"):
                continue  # the base generator is referenced by name (unmodified hub model)
            raise CheckpointError(f"{file} is missing: {directory} is an incomplete ScaleDown model folder.")
        for key, tensor in load_file(file).items():
            if key not in mapping:
                raise CheckpointError(f"{file} holds {key}, which the configured model does not have: the file "
                                      f"belongs to another model or LoRA configuration.")
            weights[mapping[key]] = tensor
    ckpt = FullCheckpoint(description, weights, source=directory)
    ckpt.check_names(directory)
    ckpt.notes.append("a Hugging Face folder holds no optimizer state: Adam moments start from zero")
    return ckpt


def write_hf(ckpt: FullCheckpoint, directory: str, merge_lora: bool = False) -> None:
    """Write the ScaleDown folder; the base generator is included when it differs from its hub checkpoint."""
    include_base = ckpt.description.base_modified() or merge_lora
    if include_base:
        ckpt.complete_weights()
    weights = ckpt.lora_merged() if merge_lora else ckpt.weights
    base_prefix = _base_prefix(ckpt.description.skeleton())
    referenced = lambda n: not include_base and n.startswith(base_prefix) and "lora_" not in n  # noqa: E731
    missing = [n for n in ckpt.missing() if not referenced(n)]
    if missing:
        raise CheckpointError(f"{ckpt.source} lacks {len(missing)} weights (e.g. {missing[:3]}); cannot write a "
                              f"complete model folder.")
    pick = lambda prefix: {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}  # noqa: E731
    save_pretrained(ckpt.description.skeleton(), directory, include_base=include_base,
                    state_dict=pick("compressor."), generator_state_dict=pick("generator."))
    if ckpt.optimizer is not None:
        ckpt.notes.append("optimizer state (Adam moments) is not carried into a Hugging Face folder")


# ---- the format table's entry points (checkpoint/formats.py) -------------------------------------------------
def describe_hf_checkpoint(src: str, src_tag, config_file, trust_remote_code: bool = False) -> ModelDescription:
    """The folder's description; --config, when given, must describe the same model."""
    directory, description = describe_folder(src, trust_remote_code)
    if config_file:
        given = ScaleDownConfig.from_file(config_file, trust_remote_code=trust_remote_code)
        description.check_same(ModelDescription.from_config(given), directory, f"--config {config_file}")
    return description


def read_hf_checkpoint(src: str, src_tag, config_file, trust_remote_code: bool = False) -> FullCheckpoint:
    return read_hf(src, trust_remote_code)


def write_hf_folder(ckpt: FullCheckpoint, directory: str, merge_lora: bool = False, overwrite: bool = False) -> str:
    """write_hf; `convert` has already refused an existing DST without --overwrite."""
    write_hf(ckpt, directory, merge_lora=merge_lora)
    return directory
