# TEST DOUBLE of neuronx_distributed.pipeline.NxDPPModel: constructor checks and auto-partition cuts only.
"""The double reproduces how NxD picks the cuts (decoder layers found through named_children, in registration
order, split by create_partitions) and the constructor's argument checks. It does not trace or run a
pipeline: run_train raises, so tests of pipeline parallelism stop at the layout and the cuts."""
from __future__ import annotations

import torch

from neuronx_distributed.parallel_layers import parallel_state as ps
from neuronx_distributed.pipeline.partition import create_partitions


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
        if broadcast_and_average_loss:
            assert not return_mb_loss, "When broadcast_and_average_loss is True return_mb_loss must be False"
        self.original_torch_module = module
        self.transformer_layer_cls = transformer_layer_cls
        self.num_microbatches = num_microbatches
        self.pipeline_parallel_size = ps.get_pipeline_model_parallel_size()
        if auto_partition and pipeline_cuts:
            raise RuntimeError("auto_partition is True and pipeline_cuts are provided.")
        if auto_partition and self.pipeline_parallel_size > 1:
            layers = self.get_model_layers(module, transformer_layer_cls)
            if not layers:
                raise ValueError(f"No modules of type {transformer_layer_cls} found in the model.")
            pipeline_cuts = create_partitions(self.pipeline_parallel_size * virtual_pipeline_size, layers)
        if pipeline_cuts and input_names is None:
            raise ValueError("Input names are required for tracing when the NxD optimizer and model wrapper are not used")
        self.pipeline_cuts = list(pipeline_cuts or [])
        self.input_names = input_names

    def get_model_layers(self, module, target_module_type, current_path=None):
        current_path = current_path or []
        result = []
        for name, child in module.named_children():
            if isinstance(child, target_module_type):
                result.append(".".join(current_path + [name]))
            else:
                result.extend(self.get_model_layers(child, target_module_type, current_path + [name]))
        return result

    def run_train(self, *args, **kwargs):
        raise NotImplementedError("the NxD test double does not trace or run pipelines (see pipeline/model.py)")

    run_eval = run_train

    def local_named_parameters(self, recurse: bool = True):
        raise NotImplementedError("the NxD test double does not partition parameters over pipeline stages")

    def forward(self, *args, **kwargs):
        raise RuntimeError("model.forward() is not supported in pipeline model. Use model.run_train() and "
                           "model.run_eval() instead.")
