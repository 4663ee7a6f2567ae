# TEST DOUBLE of neuronx_distributed.parallel_layers.mappings: the TP autograd collectives (Megatron's f and g).
import torch
import torch.distributed as dist

from . import parallel_state as ps


def _all_reduce(x: torch.Tensor) -> torch.Tensor:
    if ps.get_tensor_model_parallel_size() == 1:
        return x
    x = x.contiguous().clone()
    dist.all_reduce(x, group=ps.get_tensor_model_parallel_group())
    return x


class _Copy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, grad):
        return _all_reduce(grad)


class _Reduce(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return _all_reduce(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def copy_to_tensor_model_parallel_region(x):
    return _Copy.apply(x)


def reduce_from_tensor_model_parallel_region(x):
    return _Reduce.apply(x)
