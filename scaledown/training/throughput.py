# Throughput figures: model FLOPs of each training batch (per component), device peaks, MFU, peak memory.
"""MFU = model FLOPs of the batches trained / (elapsed seconds x peak FLOP/s of the dtype in use x devices).

Model FLOPs are counted per component from each batch's real (non-padding) tokens (`TrainingFlops`):
every matrix weight W applied to a token costs 2·|W| forward, 2·|W| for the gradient w.r.t. its input
and 2·|W| for its own gradient only where W trains (a frozen base has no weight gradients); attention
costs 4·T²·(heads·head_dim) per layer and sequence forward (the full T x T products, as
FlopCounterMode counts them) and twice that backward. The generator sees its prompt + answer tokens,
the compressor each real document's tokens + appended memory/RR tokens; the projection runs on the
memory tokens only, the LM head on the answer tokens only; embeddings (lookups), norms and
elementwise ops count 0. Recomputation under gradient checkpointing and padding are not model FLOPs.
tests/unit/test_training_flops.py checks the count against torch.utils.flop_counter.FlopCounterMode
on a Mistral-7B-shaped model on the meta device.
"""
from __future__ import annotations

import resource
from typing import Optional

import torch
from torch import nn

from scaledown.models.compressor_builders import decoder_base
from scaledown.models.generator import base_causal_lm

# Dense (no 2:4 sparsity) peak FLOP/s per device and matmul dtype, from NVIDIA's datasheets.
# Keys: (model word, variant) as torch.cuda.get_device_name() spells them, e.g. "NVIDIA H100 80GB HBM3"
# (SXM), "NVIDIA H100 PCIe", "NVIDIA H100 NVL", "NVIDIA A100-SXM4-80GB", "NVIDIA L4", "NVIDIA B200".
_HOPPER_SXM = {"bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12}
_HOPPER_NVL = {"bf16": 835.5e12, "fp16": 835.5e12, "tf32": 417.5e12, "fp32": 60.0e12}
PEAKS: dict[tuple[str, str], dict[str, float]] = {
    ("H100", "SXM"): _HOPPER_SXM,
    ("H100", "PCIE"): {"bf16": 756.5e12, "fp16": 756.5e12, "tf32": 378.0e12, "fp32": 51.2e12},
    ("H100", "NVL"): _HOPPER_NVL,
    ("H200", "SXM"): _HOPPER_SXM,
    ("H200", "NVL"): _HOPPER_NVL,
    ("GH200", "SXM"): _HOPPER_SXM,
    ("A100", ""): {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12},   # SXM4 and PCIe alike
    ("L40S", ""): {"bf16": 362.05e12, "fp16": 362.05e12, "tf32": 183.0e12, "fp32": 91.6e12},
    ("L40", ""): {"bf16": 181.05e12, "fp16": 181.05e12, "tf32": 90.5e12, "fp32": 90.5e12},
    ("L4", ""): {"bf16": 121e12, "fp16": 121e12, "tf32": 60e12, "fp32": 30.3e12},
    ("B200", ""): {"bf16": 2250e12, "fp16": 2250e12, "tf32": 1100e12, "fp32": 80e12},   # HGX B200 (1000 W)
}
_TRN1_BF16_PER_CORE = 190e12 / 2   # Trn1: 190 TFLOP/s bf16 per chip = 2 NeuronCores


def device_key(name: str) -> Optional[tuple[str, str]]:
    """(model, variant) of a CUDA device name, or None when the table has no such device.

    Whole words only ("NVIDIA L40S" is not an L4 or an L40); Hopper boards without "PCIe"/"NVL" are SXM.
    """
    words = name.upper().replace("-", " ").replace("_", " ").split()
    for model, variant in PEAKS:
        if model not in words:
            continue
        if model in ("H100", "H200", "GH200"):
            found = "PCIE" if "PCIE" in words else "NVL" if "NVL" in words else "SXM"
            return (model, found) if (model, found) in PEAKS else None
        return model, variant
    return None


def matmul_dtype(dtype: Optional[torch.dtype]) -> str:
    """The peak column for matmuls in `dtype` (autocast or parameter dtype); fp32 runs TF32 when torch allows it."""
    if dtype == torch.bfloat16:
        return "bf16"
    if dtype == torch.float16:
        return "fp16"
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32"


def peak_flops_for(name: str, dtype: Optional[torch.dtype]) -> Optional[float]:
    key = device_key(name)
    return None if key is None else PEAKS[key][matmul_dtype(dtype)]


def cuda_peak_flops(dtype: Optional[torch.dtype] = torch.bfloat16) -> Optional[float]:
    """Dense peak FLOP/s of this process's CUDA device for matmuls in `dtype`; None off CUDA or for unknown boards."""
    if not torch.cuda.is_available():
        return None
    return peak_flops_for(torch.cuda.get_device_name(), dtype)


def neuroncore_peak_flops() -> float:
    return _TRN1_BF16_PER_CORE


def _full_numel(p: torch.Tensor, tp: int) -> int:
    """Elements of the whole weight: ZeRO-3 keeps ds_numel; NxD tensor-parallel shards hold 1/tp."""
    n = int(getattr(p, "ds_numel", p.numel()))
    return n * tp if getattr(p, "tensor_model_parallel", False) else n


class _Part:
    """Matrix weights applied per token of one component, split into trainable and frozen element counts."""

    def __init__(self, params: list[nn.Parameter], tp: int):
        # ZeRO-3 leaves a partitioned weight an empty 1-D tensor between uses; ds_shape is its real shape
        self.params = [(p, _full_numel(p, tp)) for p in params if len(getattr(p, "ds_shape", p.shape)) >= 2]

    def forward_and_input_grads(self) -> int:
        return sum(n for _, n in self.params)

    def trainable(self) -> int:
        return sum(n for p, n in self.params if p.requires_grad)

    def per_token(self) -> float:
        """Training FLOPs per token: 2N forward + 2N input gradients + 2N_trainable weight gradients."""
        return 4.0 * self.forward_and_input_grads() + 2.0 * self.trainable()


def _attention_width(config) -> tuple[int, int]:
    """(layers, heads x head_dim) of a transformers config."""
    heads = int(config.num_attention_heads)
    head_dim = getattr(config, "head_dim", None) or int(config.hidden_size) // heads
    return int(config.num_hidden_layers), heads * int(head_dim)


class TrainingFlops:
    """Model FLOPs of training micro-batches of a ScaleDownModel (see the module docstring for what counts).

    `add(batch, documents_as)` takes a collated CPU batch (InputBuilder.collate) and adds its FLOPs;
    `take()` returns the sum since the last take. Trainable weights are read when a batch is added, so
    the generator warm-up (base trains) and the fine-tuning phase (LoRA + compressor) each count right.
    `tensor_parallel`: NxD's degree (its sharded weights are counted whole).
    """

    def __init__(self, model, tensor_parallel: int = 1):
        lm = base_causal_lm(model.generator)
        decoder = decoder_base(lm)
        embed = decoder.get_input_embeddings().weight
        head = lm.get_output_embeddings().weight
        self.generator = _Part([p for p in decoder.parameters() if p is not embed], tensor_parallel)
        self.lm_head = _Part([head], tensor_parallel)
        self.generator_attention = _attention_width(lm.config)
        comp = model.compressor
        comp_embed = comp.backbone.get_input_embeddings().weight
        self.compressor = _Part([p for p in comp.backbone.parameters() if p is not comp_embed], tensor_parallel)
        self.projection = _Part(list(comp.projection.parameters()), tensor_parallel)
        self.rr_head = _Part(list(comp.rr_head.parameters()) if comp.rr_head is not None else [], tensor_parallel)
        self.compressor_attention = _attention_width(comp.backbone.config)
        self.memory_tokens = int(comp.num_memory_tokens)
        self.appended = int(comp.num_appended)
        self._total = 0.0

    @staticmethod
    def _attention(lengths: torch.Tensor, layers_width: tuple[int, int]) -> float:
        layers, width = layers_width
        squares = float(lengths.double().pow(2).sum())
        return 3.0 * 4.0 * layers * width * squares   # forward 4·T²·w per layer, backward twice that

    def batch_flops(self, batch: dict[str, torch.Tensor], documents_as: str) -> float:
        """Training FLOPs of one collated micro-batch."""
        lengths = batch["attention_mask"].sum(-1)
        flops = self.generator.per_token() * float(lengths.sum()) + self._attention(lengths, self.generator_attention)
        if "labels" in batch:
            answers = float((batch["labels"][:, 1:] != -100).sum())
            flops += self.lm_head.per_token() * answers
        if documents_as == "memory" and "compressor_attention_mask" in batch:
            real = batch["document_mask"].reshape(-1)
            doc_lengths = batch["compressor_attention_mask"].reshape(real.shape[0], -1).sum(-1)[real] + self.appended
            documents = float(real.sum())
            flops += self.compressor.per_token() * float(doc_lengths.sum())
            flops += self._attention(doc_lengths, self.compressor_attention)
            flops += self.projection.per_token() * documents * self.memory_tokens + self.rr_head.per_token() * documents
        return flops

    def add(self, batch: dict[str, torch.Tensor], documents_as: str) -> None:
        self._total += self.batch_flops(batch, documents_as)

    def take(self) -> float:
        total, self._total = self._total, 0.0
        return total


def peak_memory_gb(device: torch.device) -> Optional[float]:
    """Peak accelerator memory of this process, or its peak resident host memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    try:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    except Exception:
        return None


def mfu(flops_per_sec: float, peak_flops_per_device: Optional[float], num_devices: int) -> Optional[float]:
    """Model FLOP/s of all ranks over the peak of all devices; None where the device's peak is unknown."""
    if not peak_flops_per_device:
        return None
    return flops_per_sec / (peak_flops_per_device * num_devices)


def held_parameter_elements(model: nn.Module, tp: int = 1) -> tuple[int, int]:
    """(elements this rank holds, elements of the whole model) over every parameter, trainable or frozen.

    A DeepSpeed ZeRO-3 parameter holds its partition (`ds_tensor`, padded to a multiple of the world size) of
    `ds_numel`; an FSDP2 / tensor-parallel DTensor its local shard of `numel()`; an NxD tensor-parallel layer's
    weight 1/tp of it; any other tensor all of itself. Counted once per parameter object (tied weights once)."""
    held = total = 0
    seen: set[int] = set()
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if hasattr(p, "ds_tensor"):
            held += p.ds_tensor.numel()
            total += int(p.ds_numel)
        elif hasattr(p, "to_local"):
            held += p.to_local().numel()
            total += p.numel()
        else:
            held += p.numel()
            total += _full_numel(p, tp)
    return held, total


def held_parameters_note(model: nn.Module, tp: int = 1, stages: int = 1) -> str:
    """Under pipeline stages the model holds only this rank's stage: the share is of the stage, and says so."""
    held, total = held_parameter_elements(model, tp)
    whole = "" if stages == 1 else f" in this rank's pipeline stage (1 of {stages})"
    return f"parameter elements held by this rank: {held:,} of {total:,}{whole} ({held / max(total, 1):.1%})"
