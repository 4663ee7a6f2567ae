# TEST DOUBLE of neuronx_distributed.pipeline.NxDPPModel (NxD 0.17): fx trace, cuts, split, stages on their PP ranks.
"""As NxD does it: the module is traced (pipeline/trace.py), the call_module node of every cut layer is marked,
torch.fx split_module(keep_original_order=True) makes one submodule per stage, stage s lives on PP rank s % PP,
and parameters of other stages get requires_grad=False. Local names map back to the original ones
(local_named_parameters / local_state_dict / load_state_dict).

run_train really runs the stages on their own ranks: inputs (CPU tensors) are split into num_microbatches,
every micro-batch goes forward through the stages, a stage's outputs travel to the ranks of the stages that
use them (gloo broadcast over the PP group), and backward runs stage by stage in reverse, each stage's input
gradients travelling back to the stage that produced them. The last stage backpropagates loss / num_microbatches.
As in NxD, the first call fixes the inter-stage tensor shapes (shape_traced: later calls send no metadata and
receive into buffers of the traced shapes, pipeline/comm.py): a later call whose stage outputs have another
shape or dtype raises here (on hardware: wrong-sized receives, a crash or a hang). Without use_zero1_optimizer
and use_optimizer_wrapper, the data-parallel gradients are averaged after backward (_reduce_grads_task), as NxD
does, so an NxDOptimizer that reduces them too reduces them twice.
Differences from NxD, none of which changes the arithmetic: all forwards of a step run before all backwards
(GPipe order instead of 1F1B: the same gradient sums, in the same micro-batch order), transfers are broadcasts to
the whole PP group instead of send/recv to the neighbour, and only virtual_pipeline_size=1 is implemented.
"""
from __future__ import annotations

import operator
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch.fx.passes.split_module import split_module
from torch.utils._pytree import tree_flatten, tree_unflatten

from neuronx_distributed.parallel_layers import parallel_state as ps
from neuronx_distributed.pipeline.partition import create_partitions
from neuronx_distributed.pipeline.trace import trace_model

_CHECKPOINT_PREFIX = "_checkpoint_wrapped_module."


class _TensorMeta:
    def __init__(self, tensor: torch.Tensor):
        self.shape, self.dtype, self.requires_grad = tuple(tensor.shape), tensor.dtype, tensor.requires_grad


class NxDPPModel(torch.nn.Module):
    def __init__(self, module, transformer_layer_cls=None, num_microbatches=1, virtual_pipeline_size=1,
                 output_loss_value_spec=None, return_mb_loss=False, broadcast_and_average_loss=False,
                 use_zero1_optimizer=False, use_model_wrapper=False, use_optimizer_wrapper=False, pipeline_cuts=None,
                 input_names=None, leaf_module_cls=None, autowrap_functions=None, autowrap_modules=None,
                 autowrap_obj_methods=None, tracer_cls=None, param_init_fn=None, trace_file_path=None,
                 return_loss_on_cpu=True, deallocate_pipeline_outputs=False, auto_partition=False,
                 fuse_microbatches=False, manual_pp_partition=False, manual_pp_stage_partition_fn=None,
                 manual_pp_loss_fn=None, _delay_tracing=False, **private_flags):
        super().__init__()
        if not ps.model_parallel_is_initialized():
            raise RuntimeError("Model parallelism needs to be initialzed before applying NxDPPModel wrapper.")
        if transformer_layer_cls is None and not manual_pp_partition:
            raise ValueError("NxDPPModel requires transformer_layer_cls as input")
        if virtual_pipeline_size != 1 or manual_pp_partition or _delay_tracing:
            raise NotImplementedError("the NxD test double runs virtual_pipeline_size=1 with traced partitions only")
        if broadcast_and_average_loss:
            assert not return_mb_loss, "When broadcast_and_average_loss is True return_mb_loss must be False"
        self.original_torch_module = module
        self.transformer_layer_cls = transformer_layer_cls
        self.num_microbatches = num_microbatches
        self.output_loss_value_spec = output_loss_value_spec
        self.broadcast_and_average_loss = broadcast_and_average_loss
        self.use_zero1_optimizer, self.use_optimizer_wrapper = use_zero1_optimizer, use_optimizer_wrapper
        self.shape_traced = False
        self._traced_metas: list = []          # (shape, dtype) of every inter-stage tensor, in transfer order
        self._transfer = 0
        self.dp_reductions = 0                 # read by tests: _reduce_grads_task all-reduces run
        self.return_loss_on_cpu = return_loss_on_cpu
        self.pipeline_parallel_size = ps.get_pipeline_model_parallel_size()
        self.pipeline_parallel_rank = ps.get_pipeline_model_parallel_rank()
        self.traced_model = None
        self.partitioned = False
        self.pipeline_cuts: list[str] = []
        self.local_stage_modules: list[torch.nn.Module] = []
        self.local_name_to_original_name: dict[str, str] = {}
        self.original_name_to_local_name: dict[str, str] = {}
        if auto_partition and pipeline_cuts:
            raise RuntimeError("auto_partition is True and pipeline_cuts are provided.")
        if auto_partition and self.pipeline_parallel_size > 1:
            layers = self.get_model_layers(module, transformer_layer_cls)
            if not layers:
                raise ValueError(f"No modules of type {transformer_layer_cls} found in the model.")
            pipeline_cuts = create_partitions(self.pipeline_parallel_size * virtual_pipeline_size, layers)
        if pipeline_cuts:
            if input_names is None:
                raise ValueError("Input names are required for tracing when the NxD optimizer and model wrapper are "
                                 "not used")
            self.trace(input_names=input_names, leaf_modules=leaf_module_cls, autowrap_functions=autowrap_functions,
                       autowrap_modules=autowrap_modules, autowrap_obj_methods=autowrap_obj_methods,
                       tracer_cls=tracer_cls)
            for cut in pipeline_cuts:
                self.cut_pipeline_stage(cut)
            self.partition()

    # ---- trace, cut, partition (NxD's steps) ------------------------------------------------------------------
    def trace(self, args=None, kwargs=None, input_names=None, leaf_modules=None, autowrap_functions=None,
              autowrap_modules=None, autowrap_obj_methods=None, tracer_cls=None):
        self.input_names = input_names
        leaf_modules = list(leaf_modules or []) + [self.transformer_layer_cls.__name__]
        self.traced_model = trace_model(self.original_torch_module, args=args, kwargs=kwargs, input_names=input_names,
                                        leaf_modules=leaf_modules, autowrap_functions=autowrap_functions,
                                        autowrap_modules=autowrap_modules, autowrap_obj_methods=autowrap_obj_methods,
                                        tracer_cls=tracer_cls)

    def cut_pipeline_stage(self, cut_point):
        assert cut_point not in self.pipeline_cuts, \
            f"each cutpoint can be only marked once, but {cut_point} is marked twice"
        for node in self.traced_model.graph.nodes:
            if node.op == "call_module" and node.target == cut_point:
                node.meta["partition"] = True
                self.pipeline_cuts.append(cut_point)
                return
        raise RuntimeError(f"cut_point {cut_point} does not exist in the graph")

    def partition(self):
        num_stages = 1 + len(self.pipeline_cuts)
        if self.pipeline_parallel_size != num_stages:
            raise ValueError(f"User cut stages {num_stages} mismatch the initialized pipeline parallel size "
                             f"{self.pipeline_parallel_size}")
        stage = 0
        for node in self.traced_model.graph.nodes:    # partition_traced_model: the cut layer ends its stage
            cut = "partition" in node.meta and node.meta["partition"] is True
            node.meta["partition"] = stage
            stage += int(cut)
        qualname_map: dict[str, str] = {}
        self.paritioned_model = split_module(self.traced_model, None, lambda node: node.meta["partition"],
                                             qualname_map=qualname_map, keep_original_order=True)
        self.partitions = [m for _, m in self.paritioned_model.named_children()]
        assert len(self.partitions) == num_stages, [n for n, _ in self.paritioned_model.named_children()]
        self.local_stage_modules = [self.partitions[self.pipeline_parallel_rank]]
        self._build_parameter_buffer_name_mapping(qualname_map)
        self.partitioned = True
        local = {id(p) for p in self.local_parameters()}
        for _, p in self.named_parameters():     # _disable_grad_for_nonlocal
            if id(p) not in local:
                p.requires_grad = False
                p.grad = None

    def _build_parameter_buffer_name_mapping(self, qualname_map):
        original = self.original_torch_module.state_dict(keep_vars=True)
        mine = {}
        for local_name, origin_name in qualname_map.items():
            head, _, rest = local_name.partition(".")
            if int(head[len("submod_"):]) == self.pipeline_parallel_rank:
                mine[rest] = origin_name
        for module in self.local_stage_modules:
            for local_name in module.state_dict(keep_vars=True):
                origin_name = local_name
                for local, origin in mine.items():
                    if local_name.startswith(local):
                        origin_name = local_name.replace(local, origin)
                assert origin_name in original, f"parameter/buffer name {origin_name} is missing from original torch model"
                self.local_name_to_original_name[local_name] = origin_name
                self.original_name_to_local_name[origin_name] = local_name

    def get_model_layers(self, module, target_module_type, current_path=None):
        current_path = current_path or []
        result = []
        for name, child in module.named_children():
            if isinstance(child, target_module_type):
                result.append(".".join(current_path + [name]))
            else:
                result.extend(self.get_model_layers(child, target_module_type, current_path + [name]))
        return result

    # ---- running ------------------------------------------------------------------------------------------------
    def run_train(self, *args, **kwargs):
        return self._run(kwargs, train=True)

    def run_eval(self, *args, **kwargs):
        with torch.no_grad():
            return self._run(kwargs, train=False)

    def _run(self, kwargs, train: bool):
        if set(kwargs) != set(self.input_names):
            raise RuntimeError(f"train/eval inputs ({set(kwargs)}) must be same as the tracing input names "
                               f"{set(self.input_names)}")
        for name, t in kwargs.items():
            if not isinstance(t, torch.Tensor) or t.device != torch.device("cpu"):
                raise ValueError(f"model inputs should be all on cpu device, but getting {name}")
        size = next(iter(kwargs.values())).shape[0]
        if size % self.num_microbatches:
            raise RuntimeError(f"Input batch size {size} must be divisible with the num_microbatches "
                               f"{self.num_microbatches}")
        step = size // self.num_microbatches
        micro = [{k: v[i * step:(i + 1) * step] for k, v in kwargs.items()} for i in range(self.num_microbatches)]
        runs = []
        for mb in micro:
            self._transfer = 0                 # every micro-batch repeats the traced transfers, in order
            runs.append(self._forward(mb))
            self.shape_traced = True
        if train:
            for losses_and_links in runs:
                self._backward(*losses_and_links)
            self._reduce_grads()
        losses = [loss for loss, _ in runs]
        return self._process_loss(losses)

    def _reduce_grads(self):
        """_reduce_grads_task: average DP gradients unless ZeRO-1 or the optimizer wrapper does it."""
        if self.use_zero1_optimizer or self.use_optimizer_wrapper or ps.get_data_parallel_size() == 1:
            return
        self.dp_reductions += 1
        for p in self.local_parameters():
            if p.requires_grad and p.grad is not None:
                p.grad.div_(ps.get_data_parallel_size())
                dist.all_reduce(p.grad, group=ps.get_data_parallel_group())

    def _stage_of(self, node) -> Optional[int]:
        if node.op == "call_module":
            return int(node.target[len("submod_"):])
        if node.op == "call_function" and node.target is operator.getitem:
            return self._stage_of(node.args[0])
        return None

    def _forward(self, inputs: dict[str, torch.Tensor]):
        """One micro-batch through the stages; returns (loss or None, cross-stage links for backward)."""
        env: dict[str, Any] = {}
        links: list[tuple[int, Any]] = []      # (producer stage, the value on this rank: original or received copy)
        shared: set[str] = set()
        loss = None
        for node in self.paritioned_model.graph.nodes:
            if node.op == "placeholder":
                env[node.name] = inputs[node.target]
            elif node.op == "get_attr":        # a weight read outside every stage (NxD leaves it there too)
                env[node.name] = self.paritioned_model.get_parameter(node.target) if node.target in dict(
                    self.paritioned_model.named_parameters()) else self.paritioned_model.get_buffer(node.target)
            elif node.op == "call_module":
                stage = self._stage_of(node)
                for arg in node.all_input_nodes:           # values from other stages come over the PP group
                    producer = self._stage_of(arg)
                    if producer is not None and producer != stage and arg.name not in shared:
                        shared.add(arg.name)
                        env[arg.name] = self._broadcast(env[arg.name], producer)
                        links.append((producer, env[arg.name]))
                if stage == self.pipeline_parallel_rank:
                    module = getattr(self.paritioned_model, node.target)
                    env[node.name] = module(*torch.fx.node.map_arg(node.args, lambda n: env[n.name]),
                                            **torch.fx.node.map_arg(node.kwargs, lambda n: env[n.name]))
                else:
                    env[node.name] = None
            elif node.op == "call_function":
                source = env[node.args[0].name]
                env[node.name] = None if source is None else node.target(source, *node.args[1:])
            elif node.op == "output":
                if self.pipeline_parallel_rank == self.pipeline_parallel_size - 1:
                    loss = self._loss(torch.fx.node.map_arg(node.args[0], lambda n: env[n.name]))
        return loss, links

    def _loss(self, outputs):
        spec = self.output_loss_value_spec
        if spec is True:
            return outputs
        flat, _ = tree_flatten(outputs)
        picks = [v for v, take in zip(flat, tree_flatten(spec)[0]) if take]
        assert len(picks) == 1, f"output_loss_value_spec {spec} failed to fetch the loss"
        return picks[0]

    def _broadcast(self, value, stage: int):
        """The producing stage's value on every PP rank (tensors as new leaves that keep requires_grad)."""
        group = ps.get_pipeline_model_parallel_group()
        src = dist.get_global_rank(group, stage)
        mine = self.pipeline_parallel_rank == stage
        flat, spec = tree_flatten(value) if mine else (None, None)
        header = [(spec, [_TensorMeta(v) if isinstance(v, torch.Tensor) else v for v in flat]) if mine else None]
        dist.broadcast_object_list(header, src=src, group=group)
        spec, metas = header[0]
        shapes = [(m.shape, m.dtype) for m in metas if isinstance(m, _TensorMeta)]
        if not self.shape_traced:
            self._traced_metas.append(shapes)
        elif self._transfer >= len(self._traced_metas) or self._traced_metas[self._transfer] != shapes:
            traced = self._traced_metas[self._transfer] if self._transfer < len(self._traced_metas) else "nothing"
            raise RuntimeError(f"pipeline stage {stage} sends {shapes} where the first call traced {traced}: NxDPPModel "
                               f"keeps the traced inter-stage shapes (shape_traced) and receives into buffers of those "
                               f"shapes; every run_train / run_eval call must feed inputs of one shape")
        self._transfer += 1
        out = []
        for i, meta in enumerate(metas):
            if not isinstance(meta, _TensorMeta):
                out.append(meta)
                continue
            tensor = flat[i].detach().contiguous() if mine else torch.empty(meta.shape, dtype=meta.dtype)
            dist.broadcast(tensor, src=src, group=group)
            out.append(flat[i] if mine else tensor.requires_grad_(meta.requires_grad))
        return tree_unflatten(out, spec)

    def _backward(self, loss, links):
        """Stages in reverse: gradients of each stage's shared outputs are summed onto its rank, which backpropagates."""
        group = ps.get_pipeline_model_parallel_group()
        last = self.pipeline_parallel_size - 1
        if self.pipeline_parallel_rank == last:
            (loss / self.num_microbatches).backward()
        for stage in range(last - 1, -1, -1):
            mine = self.pipeline_parallel_rank == stage
            outputs, grads = [], []
            for producer, received in links:
                if producer != stage:
                    continue
                for value in tree_flatten(received)[0]:   # the producer holds the originals, the others copies
                    if not isinstance(value, torch.Tensor) or not value.requires_grad:
                        continue
                    grad = value.grad if not mine and value.grad is not None else torch.zeros_like(value)
                    dist.all_reduce(grad, group=group)
                    if mine:
                        outputs.append(value)
                        grads.append(grad)
            if mine and outputs:
                torch.autograd.backward(outputs, grad_tensors=grads)

    def _process_loss(self, losses):
        last = self.pipeline_parallel_rank == self.pipeline_parallel_size - 1
        if last:
            loss = torch.stack([l.detach() for l in losses]).sum(0) / len(losses)
        elif self.broadcast_and_average_loss:
            loss = torch.tensor(0.0)
        else:
            return None
        if self.broadcast_and_average_loss:
            if last:
                loss = loss / ps.get_data_parallel_size()
                dist.all_reduce(loss, group=ps.get_data_parallel_group())
            group = ps.get_pipeline_model_parallel_group()
            dist.broadcast(loss, dist.get_global_rank(group, self.pipeline_parallel_size - 1), group=group)
        return loss.detach().cpu() if self.return_loss_on_cpu else loss.detach()

    # ---- parameters and state (original names) -----------------------------------------------------------------
    def local_parameters(self, recurse: bool = True):
        for _, p in self.local_named_parameters(recurse=recurse):
            yield p

    def local_named_parameters(self, recurse: bool = True):
        assert self.partitioned, "Model has not been partitioned yet."
        for module in self.local_stage_modules:
            for n, p in module.named_parameters(recurse=recurse):
                yield self.local_name_to_original_name[n.replace(_CHECKPOINT_PREFIX, "")], p

    def local_state_dict(self, *args, **kwargs):
        out = {}
        for module in self.local_stage_modules:
            for n, v in module.state_dict(*args, **kwargs).items():
                out[self.local_name_to_original_name[n]] = v
        return out

    def load_state_dict(self, state_dict, strict=True):
        local = {self.original_name_to_local_name[n]: v for n, v in state_dict.items()
                 if n in self.original_name_to_local_name}
        return self.local_stage_modules[0].load_state_dict(local, strict=strict)

    def named_parameters(self, *args, **kwargs):
        return self.original_torch_module.named_parameters(*args, **kwargs)

    def parameters(self, *args, **kwargs):
        return self.original_torch_module.parameters(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise RuntimeError("model.forward() is not supported in pipeline model. Use model.run_train() and "
                           "model.run_eval() instead.")

    def train(self, mode: bool = True):
        raise RuntimeError("model.train() is not supported in pipeline mode. Use model.run_train() and "
                               "model.run_eval() instead.")
        return super().train(mode)

    def state_dict(self, *args, **kwargs):
        raise RuntimeError("model.state_dict() is not supported in pipeline mode. Use model.local_state_dict() instead.")
