# TEST DOUBLE of neuronx_distributed.parallel_layers.layers: column / row / vocabulary-parallel layers (NxD 0.17 args).
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import parallel_state as ps
from .mappings import _copy_reducing_in, reduce_from_tensor_model_parallel_region


def _mark(param: nn.Parameter, partition_dim: int, stride: int) -> None:
    param.tensor_model_parallel = True
    param.partition_dim = partition_dim
    param.partition_stride = stride
    param.num_partitions = ps.get_tensor_model_parallel_size()


class ColumnParallelLinear(nn.Module):
    def __init__(self, input_size, output_size, bias=True, gather_output=True, dtype=torch.float32, device=None,
                 stride=1, init_method=None, sequence_parallel_enabled=False, sequence_dimension=None,
                 keep_master_weight=False, skip_bias_add=False, pad=False, pad_alignment_size_per_rank=1,
                 keep_padded_output=False, tensor_model_parallel_group=None, reduce_dtype=torch.float32,
                 rank_ordering=None):
        super().__init__()
        if sequence_parallel_enabled or gather_output:
            raise NotImplementedError("the double implements gather_output=False without sequence parallelism")
        tp = ps.get_tensor_model_parallel_size()
        self.input_size, self.output_size, self.gather_output = input_size, output_size, gather_output
        self.reduce_dtype = reduce_dtype if reduce_dtype is not None else dtype
        self.weight = nn.Parameter(torch.empty(output_size // tp, input_size, dtype=dtype, device=device))
        _mark(self.weight, 0, stride)
        self.bias = None
        if bias:
            self.bias = nn.Parameter(torch.zeros(output_size // tp, dtype=dtype, device=device))
            _mark(self.bias, 0, stride)

    def forward(self, x):
        return F.linear(_copy_reducing_in(x, self.reduce_dtype), self.weight, self.bias)


class RowParallelLinear(nn.Module):
    def __init__(self, input_size, output_size, bias=True, input_is_parallel=False, dtype=torch.float32, device=None,
                 stride=1, init_method=None, sequence_parallel_enabled=False, sequence_dimension=None,
                 keep_master_weight=False, skip_bias_add=False, pad=False, reduce_output=True,
                 tensor_model_parallel_group=None, reduce_dtype=torch.float32, tile_cc=False, rank_ordering=None):
        super().__init__()
        if sequence_parallel_enabled or not input_is_parallel:
            raise NotImplementedError("the double implements input_is_parallel=True without sequence parallelism")
        tp = ps.get_tensor_model_parallel_size()
        self.input_size, self.output_size = input_size, output_size
        self.reduce_dtype = reduce_dtype if reduce_dtype is not None else dtype
        self.weight = nn.Parameter(torch.empty(output_size, input_size // tp, dtype=dtype, device=device))
        _mark(self.weight, 1, stride)
        self.bias = nn.Parameter(torch.zeros(output_size, dtype=dtype, device=device)) if bias else None

    def forward(self, x):
        partial = F.linear(x, self.weight)      # _rpl_maybe_reduce_output: all-reduce in reduce_dtype (fp32)
        out = reduce_from_tensor_model_parallel_region(partial.to(self.reduce_dtype)).to(partial.dtype)
        return out if self.bias is None else out + self.bias


class ParallelEmbedding(nn.Module):
    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, sparse=False, init_method=nn.init.normal_, device=None,
                 dtype=torch.float32, shard_across_embedding=False, pad=False, sequence_parallel_enabled=False,
                 tensor_model_parallel_group=None, use_spmd_rank=False, sequence_dimension=None, tile_cc=False,
                 rank_ordering=None, collect_output=True):
        super().__init__()
        tp, rank = ps.get_tensor_model_parallel_size(), ps.get_tensor_model_parallel_rank()
        if num_embeddings % tp:
            raise ValueError(f"num_embeddings {num_embeddings} is not divisible by tensor parallel size {tp}")
        per_rank = num_embeddings // tp
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.start, self.end = rank * per_rank, (rank + 1) * per_rank
        # NxD layers.py: "only pad idx when it is in range", as this rank's local row (0 counts as no padding_idx)
        self.padding_idx = padding_idx - self.start if padding_idx and self.start <= padding_idx < self.end else None
        self.weight = nn.Parameter(torch.empty(per_rank, embedding_dim, dtype=dtype, device=device))
        _mark(self.weight, 0, 1)

    def forward(self, ids):
        inside = (ids >= self.start) & (ids < self.end)
        local = (ids - self.start) * inside.long()     # ids of other ranks read local row 0, then masked
        out = F.embedding(local, self.weight, self.padding_idx) * inside.unsqueeze(-1).to(self.weight.dtype)
        return reduce_from_tensor_model_parallel_region(out)
