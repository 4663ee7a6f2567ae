# TEST DOUBLE of neuronx_distributed.trainer.trainer (+ NxDModel, NxDOptimizer): NxD 0.17 signatures, eager on CPU.
from __future__ import annotations

from contextlib import contextmanager
from functools import partial

import torch
import torch.distributed as dist

from neuronx_distributed.parallel_layers import parallel_state as ps
from neuronx_distributed.pipeline import NxDPPModel
from torch_xla.core import xla_model as xm


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


@contextmanager
def _parameters_on_meta():
    """NxD utils/model_utils.py::init_on_device(meta, include_buffers=False): parameters are created on the meta
    device, buffers where the model code puts them (a model that builds itself on meta keeps meta buffers)."""
    register = torch.nn.Module.register_parameter

    def on_meta(module, name, param):
        register(module, name, param)
        if param is not None:
            kwargs = dict(module._parameters[name].__dict__)
            module._parameters[name] = type(param)(module._parameters[name].to("meta"), param.requires_grad)
            module._parameters[name].__dict__.update(kwargs)
    torch.nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


def reinit_model(model, device, param_init_fn) -> None:
    """NxD utils/model_utils.py::reinit_model: every module's *parameters* replaced by empty ones on `device`
    (parallel attributes kept), then param_init_fn(module, device). Buffers are left as they are."""
    with torch.no_grad():
        for module in model.modules():
            for key, param in list(module._parameters.items()):
                if param is None:
                    continue
                fresh = torch.nn.Parameter(torch.empty_like(param, device=device), param.requires_grad)
                fresh.__dict__.update(param.__dict__)      # preserve_parallel_attributes
                module._parameters[key] = fresh
            param_init_fn(module, device)


def initialize_parallel_model(nxd_config, model_fn, include_buffers: bool = False, *model_args, **model_kwargs):
    if not ps.model_parallel_is_initialized():
        ps.initialize_model_parallel(nxd_config["tensor_parallel_size"], nxd_config["pipeline_parallel_size"])
    init = nxd_config["model_init_config"]
    param_init_fn = init.get("param_init_fn")
    if init["meta_device_init"]:
        with _parameters_on_meta():
            model = model_fn(*model_args, **model_kwargs)
    else:
        model = model_fn(*model_args, **model_kwargs)
    pp_enabled = nxd_config["pipeline_parallel_size"] > 1
    if pp_enabled:
        model = NxDPPModel(model, **{**nxd_config["pipeline_config"], "param_init_fn": param_init_fn,
                                     "use_model_wrapper": True})
    # get_model_sequential: (PP: this stage's modules only) reinit with param_init_fn, then model.to(device). A
    # buffer still on the meta device fails the move ("Cannot copy out of meta tensor"), as .to(xla) does.
    for module in (model.local_stage_modules if pp_enabled else [model]):
        if param_init_fn is not None:
            reinit_model(module, torch.device("cpu"), param_init_fn)
        module.to(xm.xla_device())
    nxd_model = NxDModel(model, nxd_config)
    classes = nxd_config["activation_checkpoint_config"]
    if classes is not None:
        if classes == "full":
            if not pp_enabled:
                raise RuntimeError('`activation_checkpoint_config` "full" is only supported for huggingface '
                                   'transformers or nxdt models.')
            classes = [model.transformer_layer_cls]
        classes = tuple(classes if isinstance(classes, (list, tuple)) else [classes])
        assert classes and all(issubclass(c, torch.nn.Module) for c in classes)
        apply_activation_checkpointing(nxd_model, check_fn=lambda m: isinstance(m, classes))
    return nxd_model


def apply_activation_checkpointing(model, check_fn=lambda _: True) -> None:
    """NxD utils/activation_checkpoint.py: wraps the matching modules in NxDCheckpointWrapper with torch-xla's
    checkpoint, use_reentrant=True (torch_xla/utils/checkpoint.py is torch's reentrant CheckpointFunction): a
    checkpointed module whose tensor inputs need no gradient returns an output without grad_fn, so its weights
    get no gradient. Under PP only the local stage modules are wrapped, at the transformer layer class."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (CheckpointImpl,
                                                                             apply_activation_checkpointing as wrap)
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
    from torch.utils.checkpoint import checkpoint
    wrapper = partial(checkpoint_wrapper, checkpoint_impl=CheckpointImpl.REENTRANT,
                      checkpoint_fn=partial(checkpoint, use_reentrant=True))
    if isinstance(model.module, NxDPPModel):
        layer = model.module.transformer_layer_cls
        check_fn, roots = (lambda m: isinstance(m, layer)), model.module.local_stage_modules
    else:
        roots = [model.module]
    for root in roots:
        wrap(root, checkpoint_wrapper_fn=wrapper, check_fn=check_fn)


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
    """Without ZeRO-1: DP gradient all-reduce (each grad / DP), clipping, inner step. With ZeRO-1 the inner optimizer
    is NeuronZero1Optimizer (sharded states, its own reduce-scatter, clipping and grad norm)."""

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
        """NxD trainer/optimizer.py: without ZeRO-1 the DP all-reduce (bucket_allreduce_gradients: grad / dp, sum) of
        param.grad or, where a hook moved it, main_grad, then clipping; ZeRO-1 reduces, clips and steps itself."""
        config = self.nxd_config["optimizer_config"]
        if not config["zero_one_enabled"]:
            dp = ps.get_data_parallel_size()
            for grad in _fetch_gradients(self.params):
                if dp > 1:
                    grad.div_(dp)
                    dist.all_reduce(grad, group=ps.get_data_parallel_group())
            if config["grad_clipping"]:
                norm = _grad_norm(self.params, dp_reduce=False)
                coeff = config["max_grad_norm"] / (norm + 1.0e-6)
                for p in self.params:
                    if p.grad is not None:
                        p.grad.mul_(torch.where(coeff < 1, coeff, torch.ones_like(coeff)).to(p.grad.dtype))
                self._grad_norm = norm
        result = self.optimizer.step(closure=closure)
        if config["zero_one_enabled"]:
            self._grad_norm = self.optimizer.grad_norm
        return result


def _fetch_gradients(params) -> list:
    return [p.grad.data if p.grad is not None else p.main_grad.data for p in params
            if p.grad is not None or hasattr(p, "main_grad")]


def initialize_parallel_optimizer(nxd_config, optimizer_class, parameters, **defaults):
    """NxD trainer/trainer.py::initialize_optimizer_from_class: ZeRO-1 builds NeuronZero1Optimizer with NxD's
    zero1_configs (grad_clipping, sharding and norm groups, the grad-accumulation hook and higher-precision
    collectives under use_fp32_grad_acc) and the caller's **defaults, so a max_norm the caller passes reaches
    torch-xla's ZeroRedundancyOptimizer; optimizer_config["max_grad_norm"] is not passed (its default 1.0 applies)."""
    mixed = nxd_config["mixed_precision_config"]
    config = nxd_config["optimizer_config"]
    if config["zero_one_enabled"]:
        from neuronx_distributed.optimizer import NeuronZero1Optimizer
        zero1 = {"grad_clipping": config["grad_clipping"], "pin_layout": False,
                 "sharding_groups": ps.get_data_parallel_replica_groups(),
                 "grad_norm_groups": ps.get_tensor_model_parallel_replica_groups()}
        if mixed["use_fp32_grad_acc"]:
            zero1.update({"use_grad_acc_hook": True, "higher_cc_precision": True})
        zero1["save_master_weights"] = bool(mixed["use_master_weights_in_ckpt"])
        defaults.pop("decoupled_weight_decay", None)
        optimizer = NeuronZero1Optimizer(parameters, optimizer_class, **zero1, **defaults)
    else:
        if mixed["use_master_weights"]:
            raise RuntimeError("ZeRO-1 optimizer is not enabled, while `use_master_weights` is True.")
        if mixed["use_fp32_grad_acc"] or mixed["use_master_weights_in_ckpt"]:
            raise RuntimeError("Non Zero-1 optimizer does not support `use_fp32_grad_acc` of `use_master_weights_in_ckpt`.")
        optimizer = optimizer_class(parameters, **defaults)
    return NxDOptimizer(optimizer, nxd_config)
