# What model a checkpoint holds: ScaleDownConfig + the generator's and compressor backbone's HF configs.
"""Every converter output carries `scaledown_checkpoint.json` (this description, plus the format it was
written with), so a later conversion needs nothing else. Sources without it are described from:
a Hugging Face folder's own files; a training checkpoint's `trainer_state.json` ("config"); or `--config`.

`skeleton()` builds the ScaleDownModel on the meta device (no weights are read or allocated): its
state_dict names and shapes, and the ParallelPlan built from it, are what every reader and writer checks
shards against.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

from scaledown.checkpoint import folder_protocol as protocol
from scaledown.config import MODEL_FIELDS, ScaleDownConfig, config_from_saved
from scaledown.errors import CheckpointError
from scaledown.models import loading
from scaledown.models.compressor_builders import build_compressor, truncated_config
from scaledown.models.generator import build_generator
from scaledown.models.loading import fresh_attention_choice
from scaledown.models.scaledown_model import ScaleDownModel
from scaledown.models.serialization import read_saved_config, resolve_model_dir
from scaledown.text_files import load_json

METADATA_FILE = "scaledown_checkpoint.json"
FORMAT = "scaledown-checkpoint"


def hf_config(values: dict):
    """A transformers config object from its to_dict() form."""
    values = dict(values)
    return fresh_attention_choice(AutoConfig.for_model(values.pop("model_type"), **values))


@dataclass
class ModelDescription:
    config: ScaleDownConfig
    generator_config: dict
    compressor_config: dict
    _skeleton: Any = field(default=None, repr=False, compare=False)
    # (generator, compressor) tokenizers the skeleton uses instead of loading them by name (a released OSCAR
    # model's, grown by its added tokens: checkpoint/oscar_description.py); None: by name
    tokenizers: Any = field(default=None, repr=False, compare=False)

    # ---- sources ---------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: ScaleDownConfig) -> "ModelDescription":
        """Resolve the HF configs by model name (offline for the tiny preset, hub cache or local path otherwise)."""
        generator = loading.model_config(config.generator_model_name, config.trust_remote_code)
        if config.compressor_type == "n_layers":
            backbone = truncated_config(generator, config.num_compressor_layers)
        else:
            backbone = loading.model_config(config.resolved_compressor_model_name, config.trust_remote_code)
        return cls(config, generator.to_dict(), backbone.to_dict())

    @classmethod
    def from_model_folder(cls, directory: str, config: ScaleDownConfig) -> "ModelDescription":
        """A saved ScaleDown model folder as `ScaleDownModel.from_pretrained(directory, **training settings of
        config)` builds it (cli/training_run.py --init_from): the folder's model settings with the run's others, its
        generator_base / compressor HF configs (vocabularies as saved, grown by added tokens) and its tokenizers."""
        directory = resolve_model_dir(directory)
        run = {k: v for k, v in config.to_dict().items()
               if k not in MODEL_FIELDS and k not in ("preset", "trust_remote_code")}
        config = read_saved_config(directory, config.trust_remote_code, **run)[2]
        base_dir = os.path.join(directory, "generator_base")
        generator = (loading.saved_config(base_dir) if os.path.isdir(base_dir)
                     else loading.model_config(config.generator_model_name, config.trust_remote_code))
        backbone = loading.saved_config(os.path.join(directory, "compressor"))
        comp_tok = os.path.join(directory, "compressor_tokenizer")
        tokenizers = (AutoTokenizer.from_pretrained(os.path.join(directory, "tokenizer")),
                      AutoTokenizer.from_pretrained(comp_tok) if os.path.isdir(comp_tok) else None)
        return cls(config, generator.to_dict(), backbone.to_dict(), tokenizers=tokenizers)

    @classmethod
    def from_json(cls, values: dict, source: str, trust_remote_code: bool = False) -> "ModelDescription":
        config = config_from_dict(values["config"], source, trust_remote_code)
        return cls(config, values["generator_config"], values["compressor_config"])

    def to_json(self) -> dict:
        return {"config": self.config.to_dict(), "generator_config": self.generator_config,
                "compressor_config": self.compressor_config}

    # ---- the model ---------------------------------------------------------------------------------
    def skeleton(self):
        """ScaleDownModel on the meta device with this architecture (tokenizers are loaded by name)."""
        if self._skeleton is None:
            with torch.device("meta"):
                base = AutoModelForCausalLM.from_config(hf_config(self.generator_config))
                generator = build_generator(self.config, base)
                backbone = AutoModel.from_config(hf_config(self.compressor_config))
                if self.config.compressor_type == "n_layers":
                    backbone.norm = nn.Identity()
            # build_compressor reads the generator's embedding width and scale: give it a real 1-row stand-in
            width = base.get_input_embeddings().embedding_dim
            with torch.device("meta"):
                compressor = build_compressor(self.config, _EmbeddingStandIn(width), backbone=backbone)
            tokenizer, compressor_tokenizer = self.tokenizers or (None, None)
            self._skeleton = ScaleDownModel(self.config, generator=generator, compressor=compressor,
                                            tokenizer=tokenizer, compressor_tokenizer=compressor_tokenizer)
        return self._skeleton

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self.skeleton().state_dict().items()}

    def trainable_groups(self, phase: str = "finetune") -> dict[str, str]:
        """Parameter name -> optimizer group name ("generator" / "compressor") of a training phase."""
        model = self.skeleton()
        groups = model.warmup_parameter_groups() if phase == "warmup" else model.parameter_groups()
        names = {id(p): n for n, p in model.named_parameters()}
        return {names[id(p)]: g["name"] for g in groups for p in g["params"]}

    def base_modified(self) -> bool:
        """Whether the base generator's weights differ from its hub checkpoint (tiny random init or warm-up)."""
        return self.config.base_is_random or self.config.generator_warmup_ratio > 0

    def check_same(self, other: "ModelDescription", where: str, other_where: str) -> None:
        """Mismatched model settings between two sources of one checkpoint -> an error naming each field."""
        mine, theirs = self.config.to_dict(), other.config.to_dict()
        diffs = [f"{k}: {mine.get(k)!r} vs {theirs.get(k)!r}" for k in sorted(MODEL_FIELDS) if mine.get(k) != theirs.get(k)]
        if diffs:
            raise CheckpointError(f"{where} and {other_where} describe different models ({'; '.join(diffs)}). Pass the "
                                  f"settings the checkpoint was trained with (or drop --config to use the checkpoint's).")


class _EmbeddingStandIn:
    """What build_compressor asks of a generator (its input embeddings), without meta tensors to read."""

    def __init__(self, width: int):
        self.embedding = torch.nn.Embedding(1, width, device="cpu")

    def get_input_embeddings(self):
        return self.embedding


def config_from_dict(values: dict, source: str, trust_remote_code: bool = False) -> ScaleDownConfig:
    """A config recorded in a checkpoint; its trust_remote_code is ignored (config.config_from_saved)."""
    return config_from_saved(values, source, trust_remote_code)


def read_json(path: str) -> Optional[dict]:
    if not os.path.isfile(path):
        return None
    try:
        return load_json(path, CheckpointError)
    except OSError as exc:
        raise CheckpointError(f"{path} could not be read ({exc}). The checkpoint is damaged; copy it again.") from None


def write_metadata(directory: str, description: ModelDescription, layout: dict[str, Any]) -> None:
    """scaledown_checkpoint.json: what model, and how this folder lays it out (format, tp, pp, ...)."""
    with open(os.path.join(directory, METADATA_FILE), "w") as f:
        json.dump({"format": FORMAT, **layout, **description.to_json()}, f, indent=2, sort_keys=True)


def describe_checkpoint(directory: str, config_file: Optional[str], what: str, trust_remote_code: bool = False
                        ) -> tuple[ModelDescription, dict]:
    """Description of a backend checkpoint folder: its metadata, else trainer_state.json, else --config.

    Returns (description, metadata dict or {}). --config must agree with what the folder records.
    """
    meta = read_json(os.path.join(directory, METADATA_FILE)) or {}
    given = None
    if config_file:
        # the command's trust_remote_code wins over the file's
        given = ModelDescription.from_config(ScaleDownConfig.from_file(config_file, trust_remote_code=trust_remote_code))
    if meta.get("config"):
        found = ModelDescription.from_json(meta, os.path.join(directory, METADATA_FILE), trust_remote_code)
        if given is not None:
            found.check_same(given, os.path.join(directory, METADATA_FILE), f"--config {config_file}")
        return found, meta
    state = protocol.state_if_any(directory)
    if state and state.get("config"):
        found = ModelDescription.from_config(config_from_dict(state["config"], protocol.state_path(directory),
                                                              trust_remote_code))
        if given is not None:
            found.check_same(given, protocol.state_path(directory), f"--config {config_file}")
        return found, meta
    if given is not None:
        return given, meta
    raise CheckpointError(f"{directory} does not say which model it holds (no {METADATA_FILE} or {protocol.STATE_FILE}) "
                          f"and this {what} checkpoint was not written by `scaledown train`. Pass --config FILE with "
                          f"the ScaleDownConfig (YAML or JSON) it was trained with.")
