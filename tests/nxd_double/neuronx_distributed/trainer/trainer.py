# TEST DOUBLE of neuronx_distributed.trainer.trainer (+ NxDModel, NxDOptimizer): NxD 0.17 signatures, eager on CPU.
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.distributed as dist

from neuronx_distributed.parallel_layers import parallel_state as ps
from neuronx_distributed.pipeline import NxDPPModel


def neuronx_distributed_config(tensor_parallel_size=1, pipeline_parallel_size=1, expert_parallel_size=1,
                               context_parallel_size=1, pipeline_config=None, optimizer_config=None,
                               activation_checkpoint_config=None, pad_model=False, sequence_parallel=False,
                               model_init_config=None, lora_config=None, mixed_precision_config=None,
                               sequential_move_factor=11, lnc_size=1):
    optimizer_config = dict(optimizer_config or {"zero_one_enabled": False, "grad_clipping": True, "max_grad_norm": 1.0})
    optimizer_config.setdefault("zero_one_enabled", False)
    optimizer_config.setdefault("grad_clipping", True)
    if optimizer_config["grad_clipping"]:
        optimizer_config.setdefault("max_grad_norm", 1.0)
    zero1 = optimizer_config["zero_one_enabled"]
    mixed_precision_config = dict(mixed_precision_config or {})
    mixed_precision_config.setdefault("use_master_weights", zero1)
    mixed_precision_config.setdefault("use_fp32_grad_acc", zero1)
    mixed_precision_config.setdefault("use_master_weights_in_ckpt", False)
    model_init_config = dict(model_init_config or {})
    model_init_config.setdefault("sequential_move_factor", sequential_move_factor)
    model_init_config.setdefault("meta_device_init", False)
    if model_init_config["meta_device_init"] and "param_init_fn" not in model_init_config:
        raise ValueError("param_init_fn must be provided when meta_device_init is True")
    config = {"tensor_parallel_size": tensor_parallel_size, "pipeline_parallel_size": pipeline_parallel_size,
              "expert_parallel_size": expert_parallel_size, "context_parallel_size": context_parallel_size,
              "pipeline_config": pipeline_config, "optimizer_config": optimizer_config,
              "activation_checkpoint_config": activation_checkpoint_config, "pad_model": pad_model,
              "sequence_parallel": sequence_parallel, "model_init_config": model_init_config,
              "lora_config": lora_config, "mixed_precision_config": mixed_precision_config, "lnc_size": lnc_size}
    if dist.is_initialized():
        ps.initialize_model_parallel(tensor_model_parallel_size=tensor_parallel_size,
                                     pipeline_model_parallel_size=pipeline_parallel_size,
                                     expert_model_parallel_size=expert_parallel_size, lnc_size=lnc_size,
                                     context_parallel_size=context_parallel_size)
    return config


class NxDModel(torch.nn.Module):
    def __init__(self, module, nxd_config):
        super().__init__()
        self.module = module
        self.nxd_config = nxd_config
        self.pp_enabled = nxd_config["pipeline_parallel_size"] > 1
        if not self.pp_enabled:
            self.train()

    def original_module(self):
        return self.module.original_torch_module if self.pp_enabled else self.module

    def run_train(self, *args, **kwargs):
        if self.pp_enabled:
            return self.module.run_train(*args, **kwargs)
        loss = self.forward(*args, **kwargs)
        loss.backward()
        return loss

    def run_eval(self, *args, **kwargs):
        assert self.pp_enabled, "`run_eval` should be used only when pipeline parallel is enabled."
        return self.module.run_eval(*args, **kwargs)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def named_parameters(self, *args, **kwargs):
        source = self.module.local_named_parameters if self.pp_enabled else self.module.named_parameters
        yield from source(*args, **kwargs)

    def state_dict(self, *args, **kwargs):
        return self.module.local_state_dict(*args, **kwargs) if self.pp_enabled else self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict=True):
        return self.module.load_state_dict(state_dict, strict=strict)


def initialize_parallel_model(nxd_config, model_fn, include_buffers: bool = False, *model_args, **model_kwargs):
    if not ps.model_parallel_is_initialized():
        ps.initialize_model_parallel(nxd_config["tensor_parallel_size"], nxd_config["pipeline_parallel_size"])
    init = nxd_config["model_init_config"]
    if init["meta_device_init"]:
        with torch.device("meta"):
            model = model_fn(*model_args, **model_kwargs)
    else:
        model = model_fn(*model_args, **model_kwargs)
    base = model
    if nxd_config["pipeline_parallel_size"] > 1:
        model = NxDPPModel(model, **{**nxd_config["pipeline_config"], "param_init_fn": init.get("param_init_fn"),
                                     "use_model_wrapper": True})
    if init["meta_device_init"]:   # get_model_sequential: materialise on the host, param_init_fn, move
        with torch.no_grad():
            for module in base.modules():
                for name, param in list(module.named_parameters(recurse=False)):
                    if param.device.type == "meta":
                        fresh = torch.nn.Parameter(torch.empty_like(param, device="cpu"),
                                                   requires_grad=param.requires_grad)
                        fresh.__dict__.update(param.__dict__)   # keep tensor_model_parallel & co
                        setattr(module, name, fresh)
                for name, buffer in list(module.named_buffers(recurse=False)):
                    if buffer is not None and buffer.device.type == "meta":
                        module._buffers[name] = torch.zeros_like(buffer, device="cpu")
                init["param_init_fn"](module, torch.device("cpu"))
    nxd_model = NxDModel(model, nxd_config)
    classes = nxd_config["activation_checkpoint_config"]
    if classes is not None:
        if classes == "full":
            raise RuntimeError('`activation_checkpoint_config` "full" is only supported for huggingface transformers '
                               'or nxdt models.')
        classes = tuple(classes if isinstance(classes, (list, tuple)) else [classes])
        assert classes and all(issubclass(c, torch.nn.Module) for c in classes)
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing
        apply_activation_checkpointing(nxd_model, check_fn=lambda m: isinstance(m, classes))
    return nxd_model


def _grad_norm(params: list, dp_reduce: bool) -> torch.Tensor:
    """NxD grads.get_grad_norm (force_spmd): TP-sharded grads count once, replicated ones / tp; summed over TP, PP."""
    tp = ps.get_tensor_model_parallel_size()
    total = torch.zeros(1, dtype=torch.float32)
    for p in params:
        if p.grad is None:
            continue
        square = p.grad.detach().float().norm() ** 2
        total += square if getattr(p, "tensor_model_parallel", False) else square / tp
    if tp > 1:
        dist.all_reduce(total, group=ps.get_tensor_model_parallel_group())
    if ps.get_pipeline_model_parallel_size() > 1:
        dist.all_reduce(total, group=ps.get_pipeline_model_parallel_group())
    return total.sqrt()


class NxDOptimizer(torch.optim.Optimizer):
    """Without ZeRO-1: DP gradient all-reduce (each grad / DP), clipping, inner step. The double's ZeRO-1 does the same
    arithmetic without sharding the states (files are still written per data-parallel rank)."""

    def __init__(self, optimizer, nxd_config):
        self.optimizer = optimizer
        self.nxd_config = nxd_config
        self._grad_norm = None
        self.params = [p for g in self.param_groups for p in g["params"]]

    @property
    def grad_norm(self):
        return self._grad_norm

    @property
    def state(self):
        return self.optimizer.state

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def defaults(self):
        return self.optimizer.defaults

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict):
        self.optimizer.load_state_dict(state_dict)

    def zero_grad(self, set_to_none=False):
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        config = self.nxd_config["optimizer_config"]
        dp = ps.get_data_parallel_size()
        for p in self.params:
            if p.grad is not None and dp > 1:
                p.grad.div_(dp)
                dist.all_reduce(p.grad, group=ps.get_data_parallel_group())
        if config["grad_clipping"]:
            norm = _grad_norm(self.params, dp_reduce=False)
            coeff = config["max_grad_norm"] / (norm + 1.0e-6)
            for p in self.params:
                if p.grad is not None:
                    p.grad.mul_(torch.where(coeff < 1, coeff, torch.ones_like(coeff)).to(p.grad.dtype))
            self._grad_norm = norm
        return self.optimizer.step(closure=closure)


def initialize_parallel_optimizer(nxd_config, optimizer_class, parameters, **defaults):
    mixed = nxd_config["mixed_precision_config"]
    if not nxd_config["optimizer_config"]["zero_one_enabled"]:
        if mixed["use_master_weights"]:
            raise RuntimeError("ZeRO-1 optimizer is not enabled, while `use_master_weights` is True.")
        if mixed["use_fp32_grad_acc"] or mixed["use_master_weights_in_ckpt"]:
            raise RuntimeError("Non Zero-1 optimizer does not support `use_fp32_grad_acc` of `use_master_weights_in_ckpt`.")
    return NxDOptimizer(optimizer_class(parameters, **defaults), nxd_config)
