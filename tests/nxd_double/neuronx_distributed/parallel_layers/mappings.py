# TEST DOUBLE of neuronx_distributed.parallel_layers.mappings: the TP autograd collectives (Megatron's f and g).
import torch
import torch.distributed as dist

from . import parallel_state as ps


def _all_reduce(x: torch.Tensor, dtype: torch.dtype = None) -> torch.Tensor:
    """Sum over the TP group; with `dtype` the sum is taken in that dtype and cast back (NxD's reduce_dtype)."""
    if ps.get_tensor_model_parallel_size() == 1:
        return x
    original = x.dtype
    x = x.contiguous().to(dtype or original, copy=True)
    dist.all_reduce(x, group=ps.get_tensor_model_parallel_group())
    return x.to(original)


class _Copy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, reduce_dtype=None):
        ctx.reduce_dtype = reduce_dtype
        return x

    @staticmethod
    def backward(ctx, grad):
        return _all_reduce(grad, ctx.reduce_dtype), None


class _Reduce(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return _all_reduce(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def copy_to_tensor_model_parallel_region(x):
    return _Copy.apply(x)


def _copy_reducing_in(x, reduce_dtype):
    """ColumnParallelLinear's input: identity forward, input-gradient all-reduce in reduce_dtype (NxD
    layers_utils.py::_linear_autograd_bwd_grad_reduce casts to ctx.reduce_dtype before the all-reduce)."""
    return _Copy.apply(x, reduce_dtype)


def reduce_from_tensor_model_parallel_region(x):
    return _Reduce.apply(x)


def gather_from_tensor_model_parallel_region(input_, process_group=None):
    """NxD mappings.py: all-gather along the last dimension over the TP group (forward only in the double: the
    backend gathers vocabulary-sharded logits for generation, under no_grad)."""
    tp = ps.get_tensor_model_parallel_size()
    if tp == 1:
        return input_
    parts = [torch.empty_like(input_) for _ in range(tp)]
    dist.all_gather(parts, input_.contiguous(), group=process_group or ps.get_tensor_model_parallel_group())
    return torch.cat(parts, dim=-1)
