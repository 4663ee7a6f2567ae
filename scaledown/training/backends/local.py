# One-process backend (CPU or one GPU): AdamW, autocast, clipping, safetensors checkpoints.
from __future__ import annotations

import contextlib
import io
import os
import shutil
from typing import Any, Optional

import torch
from safetensors.torch import load_file, save_file

from scaledown.checkpoint import folder_protocol as ckpt
from scaledown.checkpoint import safe_load
from scaledown.checkpoint.safe_load import problem_with
from scaledown.config import ScaleDownConfig
from scaledown.errors import CheckpointError, ConfigError
from scaledown.models.scaledown_model import ScaleDownModel, ScaleDownOutput
from scaledown.models.tied_weights import drop_aliases, tied_aliases
from scaledown.training.backends.base import Backend, StepNorm, detached
from scaledown.training.throughput import cuda_peak_flops, peak_memory_gb

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
CLIENT_FILE = "client_state.pt"


def resolve_device(device_type: str) -> torch.device:
    if device_type in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device_type} was asked for but no GPU is visible to PyTorch "
                              f"(torch {torch.__version__}). Use --device cpu, or install a CUDA build of torch.")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if device_type == "neuron":
        raise ConfigError("--device neuron (TorchNeuron, Trn2/Trn3) runs on the PyTorch-native backend: pass --backend "
                          "torch and start it with torchrun. For Trn1 use --device trainium (NxD backend).")
    if device_type == "trainium":
        raise ConfigError("--device trainium runs on the NeuronX Distributed backend; start it on a Trn1 node "
                          "(launchers/train_trn1.py or slurm/train_trn1.sh).")
    if device_type == "auto" and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def autocast_dtype(config: ScaleDownConfig, device: torch.device) -> Optional[torch.dtype]:
    if config.use_fp16 and device.type == "cuda":
        return torch.float16
    if config.use_bf16 and (device.type == "cpu" or torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return None


def float32_trainable(param_groups: list[dict[str, Any]]) -> int:
    """Make every trainable weight float32 (the optimizer's master copy); returns how many were upcast.

    A folder saved in bf16 loads in bf16 (transformers 5's dtype "auto"): the generator base the warm-up trains,
    or anything a caller built from it, would otherwise step in bf16, where AdamW's small updates round away.
    Autocast still computes in bf16. Frozen weights are left as loaded: nothing updates them, so their saved
    dtype loses nothing and a frozen 7B base stays at half the memory.
    """
    upcast = 0
    for group in param_groups:
        for p in group["params"]:
            if p.is_floating_point() and p.dtype != torch.float32:
                p.data = p.data.float()
                upcast += 1
    return upcast


def checkpoint_state_dict(model: ScaleDownModel) -> dict[str, torch.Tensor]:
    """What a checkpoint must hold: every tensor except an unmodified hub base generator (reloaded from the hub),
    and each tied weight once (models/tied_weights.py: the model ties the head to the embedding again on load)."""
    state = drop_aliases(model.state_dict(), tied_aliases(model))
    if model.generator_base_modified:
        return state
    return {k: v for k, v in state.items() if not k.startswith("generator.") or "lora_" in k}


class LocalBackend(Backend):
    name = "local"

    def __init__(self, config: ScaleDownConfig):
        self.config = config
        self.device = resolve_device(config.device_type)
        self.dtype = autocast_dtype(config, self.device)
        self._model: Optional[ScaleDownModel] = None
        self.optimizer = None
        self.scheduler = None
        self.scaler = None

    @property
    def model(self) -> ScaleDownModel:
        return self._model

    def setup(self, model: ScaleDownModel) -> None:
        self._model = model.to(self.device)

    def prepare(self, param_groups, lr_lambda, accumulation: int) -> None:
        groups = [g for g in param_groups if g["params"]]
        float32_trainable(groups)
        self.optimizer = torch.optim.AdamW(groups, betas=(self.config.adam_beta1, self.config.adam_beta2),
                                           eps=self.config.adam_epsilon, weight_decay=self.config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda)
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None

    def to_device(self, batch):
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def forward_backward(self, batch, documents_as: str, norm: StepNorm) -> ScaleDownOutput:
        with self.autocast():
            out = self._model(batch, documents_as=documents_as)
        loss = norm.objective(out) * self.gradient_average
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        return detached(out)

    def optimizer_step(self) -> Optional[torch.Tensor]:
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        max_norm = self.config.max_grad_norm if self.config.max_grad_norm > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm.detach()   # read when the loop logs: float() here would wait for the GPU every step

    def learning_rates(self) -> dict[str, float]:
        return {g.get("name", str(i)): g["lr"] for i, g in enumerate(self.optimizer.param_groups)}

    # ---- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self, root: str, tag: str, client_state: dict[str, Any]) -> str:
        final = os.path.join(root, tag)
        tmp = ckpt.new_staging(final)
        try:
            state = {k: v.detach().contiguous().cpu() for k, v in checkpoint_state_dict(self._model).items()}
            save_file(state, os.path.join(tmp, MODEL_FILE), metadata={"format": "pt"})
            _torch_save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                         "scaler": self.scaler.state_dict() if self.scaler else None},
                        os.path.join(tmp, OPTIMIZER_FILE))
            _torch_save(client_state, os.path.join(tmp, CLIENT_FILE))
            ckpt.commit(tmp, final)
            return final
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def checkpoint_files(self, path: str) -> list[str]:
        return [os.path.join(path, name) for name in (MODEL_FILE, OPTIMIZER_FILE, CLIENT_FILE)]

    def load_checkpoint(self, path: str) -> dict[str, Any]:
        model_file = os.path.join(path, MODEL_FILE)
        if not os.path.isfile(model_file):
            if any(name.endswith("model_states.pt") or name in ("model", "done") for name in os.listdir(path)):
                raise CheckpointError(f"{path} has no {MODEL_FILE}: it is not a one-process (local backend) checkpoint. "
                                      f"Resume it with the backend that wrote it, or convert it with `scaledown convert`.")
            raise ckpt.damaged(model_file, "is missing")
        try:
            state = load_file(model_file, device=str(self.device))
        except Exception as exc:  # safetensors raises its own error type for a truncated or garbled file
            raise ckpt.damaged(model_file, f"is damaged or truncated ({type(exc).__name__}: "
                                           f"{str(exc).splitlines()[0][:160]})") from None
        try:
            missing, unexpected = self._model.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise CheckpointError(f"{model_file} does not match this model ({str(exc).splitlines()[-1][:200]}). It was "
                                  f"written for another configuration.") from None
        expected = set(checkpoint_state_dict(self._model))   # tied aliases excluded: loading the embedding sets them
        missing = [k for k in missing if k in expected]
        if missing or unexpected:
            raise CheckpointError(f"{model_file} does not match this model (missing {missing[:3]}, unexpected "
                                  f"{list(unexpected)[:3]}). It was written for another configuration.")
        opt = _guarded(safe_load.load_file, os.path.join(path, OPTIMIZER_FILE))
        self.optimizer.load_state_dict(opt["optimizer"])
        self.scheduler.load_state_dict(opt["scheduler"])
        if self.scaler and opt.get("scaler"):
            self.scaler.load_state_dict(opt["scaler"])
        return _guarded(safe_load.load_file, os.path.join(path, CLIENT_FILE))

    def export_pretrained(self, directory: str) -> None:
        self._model.save_pretrained(directory)

    def memory_gb(self) -> Optional[float]:
        return peak_memory_gb(self.device)

    def peak_flops(self) -> Optional[float]:
        return cuda_peak_flops(self.dtype) if self.device.type == "cuda" else None


def _torch_save(obj: Any, path: str) -> None:
    """torch.save through a buffer: a full disk then fails with OSError ENOSPC (torch's own writer says only
    'unexpected pos')."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with open(path, "wb") as f:
        f.write(buffer.getbuffer())


def _guarded(load, file: str):
    """A checkpoint file read through the guarded loader; its error names the previous complete checkpoint."""
    try:
        return load(file)
    except CheckpointError as exc:
        raise ckpt.damaged(file, problem_with(file) or f"could not be read ({str(exc)[:200]})") from None
