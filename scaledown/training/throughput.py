# Throughput figures: tokens/s, examples/s and MFU (6 x parameters x tokens, as nanoGPT estimates it).
from __future__ import annotations

from typing import Optional

import torch

# Dense bf16 peak FLOP/s per device (vendor datasheets, no sparsity).
_PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "A10G": 125e12, "L40S": 362e12, "L4": 121e12,
          "A6000": 155e12, "V100": 125e12, "TRN1": 190e12 / 2}  # Trn1: 190 TFLOP/s bf16 per chip = 2 NeuronCores


def cuda_peak_flops() -> Optional[float]:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name().upper()
    for key, value in _PEAKS.items():
        if key in name:
            return value
    return None


def neuroncore_peak_flops() -> float:
    return _PEAKS["TRN1"]


def flops_per_token(model: torch.nn.Module) -> float:
    """Training FLOPs per token: 6 x parameters (forward 2N + backward 4N), attention not counted."""
    # ZeRO-3 parameters are empty between uses; ds_numel is their full size
    return 6.0 * sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())


def peak_memory_gb(device: torch.device) -> Optional[float]:
    """Peak accelerator memory of this process, or its peak resident host memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    except Exception:
        return None


def mfu(tokens_per_sec: float, flops_token: float, peak_flops_per_device: Optional[float],
        num_devices: int) -> Optional[float]:
    if not peak_flops_per_device:
        return None
    return tokens_per_sec * flops_token / (peak_flops_per_device * num_devices)
