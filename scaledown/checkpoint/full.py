# The format-independent checkpoint every reader produces and every writer consumes: full (unsharded) tensors.
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from scaledown.checkpoint import folder_protocol as protocol
from scaledown.checkpoint.description import ModelDescription
from scaledown.errors import CheckpointError
from scaledown.models import loading
from scaledown.models.generator import without_lora
from scaledown.models.tied_weights import tied_aliases, with_aliases

ADAM_MOMENTS = ("exp_avg", "exp_avg_sq")


@dataclass
class OptimizerState:
    """Adam state by parameter name, with the moments at the parameter's full shape (fp32)."""
    moments: dict[str, dict[str, torch.Tensor]]          # name -> {"exp_avg": T, "exp_avg_sq": T}
    step: int                                            # optimizer steps taken
    groups: list[dict[str, Any]] = field(default_factory=list)   # hyper-parameters + "name" + "params": [names]


@dataclass
class PendingCheckpoint:
    """A checkpoint described but not read yet. A writer that reads late (formats.py: nxd) checks its options
    against `description` (nxd: builds the tp / pp plan, refusing what the heads and widths cannot take) before it
    calls load(), so bad options fail before any tensor is read and the plan it checked is the one it writes."""
    description: ModelDescription
    read: Callable[[], "FullCheckpoint"]
    loaded: Optional["FullCheckpoint"] = None

    def load(self) -> "FullCheckpoint":
        if self.loaded is None:
            self.loaded = self.read()
        return self.loaded

@dataclass
class FullCheckpoint:
    description: ModelDescription
    weights: dict[str, torch.Tensor]                      # ScaleDownModel state_dict names, full shapes
    optimizer: Optional[OptimizerState] = None
    trainer_state: Optional[dict] = None                  # trainer_state.json of a training checkpoint
    notes: list[str] = field(default_factory=list)        # what a conversion could not carry, said to the user
    source: str = ""

    def check_names(self, where: str) -> None:
        """Weights must be a subset of the model's parameters with matching shapes (another model otherwise).
        Every reader calls it; tied weights a file holds once (tie_word_embeddings) are then filled in under every
        name, so writers see the model's full state dict (safetensors writers drop the aliases again)."""
        self.weights = with_aliases(self.weights, tied_aliases(self.description.skeleton()))
        shapes = self.description.shapes()
        extra = sorted(set(self.weights) - set(shapes))
        if extra:
            raise CheckpointError(f"{where} holds {len(extra)} tensors this model does not have (e.g. {extra[:3]}): it "
                                  f"belongs to another model or configuration. Check --config / the model settings.")
        for name, tensor in self.weights.items():
            if tuple(tensor.shape) != shapes[name]:
                raise CheckpointError(f"{where}: {name} has shape {tuple(tensor.shape)} but the configured model has "
                                      f"{shapes[name]}. The checkpoint belongs to another model or configuration.")

    def missing(self) -> list[str]:
        return [n for n in self.description.shapes() if n not in self.weights]

    def complete_weights(self) -> None:
        """Fill in an unmodified hub base generator (an HF folder only references it) by loading it by name."""
        missing = self.missing()
        if not missing:
            return
        base_only = all(n.startswith("generator.") and "lora_" not in n for n in missing)
        if not base_only or self.description.base_modified():
            raise CheckpointError(f"{self.source} lacks {len(missing)} weights of the model (e.g. {missing[:3]}). "
                                  f"Convert a complete checkpoint.")
        config = self.description.config
        base = loading.load_causal_lm(config.generator_model_name, config.trust_remote_code).state_dict()
        prefix = "generator.base_model.model."
        for name in missing:
            plain = without_lora({name[len(prefix):]: None})
            key = next(iter(plain))
            if key not in base:
                raise CheckpointError(f"the base generator {config.generator_model_name} has no {key}; it is not the "
                                      f"model this checkpoint was trained on.")
            self.weights[name] = base[key]
        self.notes.append(f"base generator weights loaded from {config.generator_model_name} (not in the source)")

    def lora_merged(self) -> dict[str, torch.Tensor]:
        """Weights with every LoRA delta (alpha/r) B A added to its base weight and lora_B zeroed (a no-op adapter)."""
        config = self.description.config
        scale = config.lora_alpha / config.lora_r
        out = dict(self.weights)
        for name in self.weights:
            if ".lora_A." not in name:
                continue
            module, rest = name.split(".lora_A.", 1)
            b_name = f"{module}.lora_B.{rest}"
            base_name = f"{module}.base_layer.weight"
            a, b, w = self.weights[name], self.weights[b_name], self.weights[base_name]
            out[base_name] = (w.float() + scale * (b.float() @ a.float())).to(w.dtype)
            out[b_name] = torch.zeros_like(b)
        return out


def write_trainer_state(ckpt: FullCheckpoint, directory: str, backend: str) -> None:
    """Carry trainer_state.json (step, phase, ...) so `--resume_from` accepts the converted folder."""
    state = {**ckpt.trainer_state, "backend": backend, "converted_from": ckpt.source}
    protocol.write_state(directory, state)
