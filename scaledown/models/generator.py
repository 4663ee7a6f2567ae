# The generator: a causal LM with LoRA adapters (peft), plus splicing memory embeddings into its input.
from __future__ import annotations

import contextlib
import warnings

import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from scaledown.config import ScaleDownConfig
from scaledown.models import loading


def lora_config(config: ScaleDownConfig):
    targets = config.lora_target_modules
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")


@contextlib.contextmanager
def quiet_peft_wrapping():
    """peft (0.21 here) reads transformers' deprecated `is_gradient_checkpointing` when it wraps a model, and
    transformers 5 warns about it on every build: the warning is about their code, not the user's, so it is hidden
    here (only that message, only while wrapping)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def build_generator(config: ScaleDownConfig, base: nn.Module | None = None, seed: int | None = None) -> nn.Module:
    """Load (or take) the base causal LM, freeze it and wrap it with fresh LoRA adapters.

    seed: draw the LoRA from this seed, whatever loading the base consumed (ZeRO-3 loads partitioned)."""
    if base is None:
        base = loading.load_causal_lm(config.generator_model_name, config.trust_remote_code)
    for p in base.parameters():
        p.requires_grad_(False)
    if seed is not None:
        torch.manual_seed(seed)
    with quiet_peft_wrapping():
        return get_peft_model(base, lora_config(config))


def base_causal_lm(generator: nn.Module) -> nn.Module:
    """The *ForCausalLM under the peft wrapper (LoRA layers stay injected in it)."""
    get = getattr(generator, "get_base_model", None)
    return get() if callable(get) else generator


def splice_memory(embeds: torch.Tensor, memory: torch.Tensor, memory_slots: torch.Tensor) -> torch.Tensor:
    """Replace the input embeddings at memory slots.

    embeds (B, T, H); memory (B, M, H) with M = documents x memory tokens; memory_slots (B, T): -1
    keeps the token embedding, j >= 0 takes memory[b, j]. A gather + where keeps shapes static (XLA).
    """
    index = memory_slots.clamp(min=0).unsqueeze(-1).expand(-1, -1, embeds.shape[-1])
    gathered = torch.gather(memory.to(embeds.dtype), 1, index)
    return torch.where((memory_slots >= 0).unsqueeze(-1), gathered, embeds)


def lora_parameters(generator: nn.Module) -> list[nn.Parameter]:
    return [p for n, p in generator.named_parameters() if "lora_" in n]


def base_parameters(generator: nn.Module) -> list[nn.Parameter]:
    return [p for n, p in generator.named_parameters() if "lora_" not in n]


def without_lora(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with peft's LoRA tensors dropped and `.base_layer.` folded back into plain names."""
    return {k.replace(".base_layer.", "."): v for k, v in state.items() if "lora_" not in k}
