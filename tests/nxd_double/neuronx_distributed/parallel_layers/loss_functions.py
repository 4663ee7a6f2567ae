# TEST DOUBLE of neuronx_distributed.parallel_layers.loss_functions.parallel_cross_entropy (three TP all-reduces).
import torch
import torch.distributed as dist

from . import parallel_state as ps


class _VocabParallelCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target):
        group, tp = ps.get_tensor_model_parallel_group(), ps.get_tensor_model_parallel_size()
        per_rank = logits.shape[-1]
        start = ps.get_tensor_model_parallel_rank() * per_rank
        top = logits.max(dim=-1).values
        if tp > 1:
            dist.all_reduce(top, op=dist.ReduceOp.MAX, group=group)
        logits.sub_(top.unsqueeze(-1))          # in place, as NxD does
        inside = (target >= start) & (target < start + per_rank)
        local = (target - start).clamp(0, per_rank - 1)
        picked = logits.gather(-1, local.unsqueeze(-1)).squeeze(-1) * inside
        exp = logits.exp()
        total = exp.sum(dim=-1)
        if tp > 1:
            dist.all_reduce(picked, group=group)
            dist.all_reduce(total, group=group)
        ctx.save_for_backward(exp.div_(total.unsqueeze(-1)), inside, local)
        return total.log() - picked

    @staticmethod
    def backward(ctx, grad):
        softmax, inside, local = ctx.saved_tensors
        grad_input = softmax.clone()
        grad_input.scatter_add_(-1, local.unsqueeze(-1), -inside.to(softmax.dtype).unsqueeze(-1))
        return grad_input * grad.unsqueeze(-1), None


def parallel_cross_entropy(vocab_parallel_logits, target, label_smoothing=0.0):
    """Per-token loss without reduction over vocabulary-sharded logits (modifies the logits in place)."""
    if label_smoothing:
        raise NotImplementedError("the double implements label_smoothing=0")
    return _VocabParallelCrossEntropy.apply(vocab_parallel_logits, target)
