# Apply the shared ParallelPlan to a ScaleDownModel from outside: NxD parallel layers in place, local head counts.
"""torchtitan's habit: the model code stays plain torch + transformers + peft; this module swaps each
nn.Linear / nn.Embedding the plan names (plan.modules) for the NxD layer it specifies, copies this TP rank's
slice of the full weights into it (plan.shard: the same arithmetic the converters use), tells every attention
module how many heads it holds locally (plan.attention) and replaces the model's token loss with NxD's
vocabulary-parallel cross-entropy. On the meta device nothing is copied (weights come from a checkpoint).
"""
from __future__ import annotations

import math
from types import ModuleType
from typing import Callable

import torch
from torch import nn

from scaledown.models.tied_weights import retie, tied_aliases
from scaledown.parallel import ParallelPlan


def set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def _parallel_module(spec, layers: ModuleType, dtype: torch.dtype, device: torch.device,
                     sequence_parallel: bool) -> nn.Module:
    cls = getattr(layers, spec.parallel_class)
    kwargs = dict(spec.kwargs)
    if spec.parallel_class == "ParallelEmbedding":
        return cls(**kwargs, dtype=dtype, device=device)
    return cls(**kwargs, dtype=dtype, device=device, sequence_parallel_enabled=sequence_parallel)


def keep_embed_scale(old: nn.Module, new: nn.Module) -> None:
    """Gemma-2/3 multiply by sqrt(hidden) inside the embedding module (transformers 5's *ScaledWordEmbedding,
    `scalar_embed_scale`): the parallel embedding that replaces one keeps the factor, cast to the weight's dtype as
    the original's forward does. (NxD's ParallelEmbedding has no scale: without this an NxD Gemma run trains on
    embeddings sqrt(hidden) too small.)"""
    scale = getattr(old, "scalar_embed_scale", None)
    if scale is None or float(scale) == 1.0:
        return
    factor = float(scale)

    def scaled(module, args, output):
        return output * torch.tensor(factor, dtype=module.weight.dtype, device=output.device)
    new.register_forward_hook(scaled)
    new.scalar_embed_scale = factor


def apply_plan(model: nn.Module, plan: ParallelPlan, layers: ModuleType, tp_rank: int,
               sequence_parallel: bool = False) -> dict[str, int]:
    """Swap every planned module in `model` (in place); returns {module path: kv_shared_group_size > 1}.

    A tied LM head (tie_word_embeddings) stays tied: embedding and head are both vocabulary-parallel with the same
    row split, so this rank's head shard IS its embedding shard, and the swapped head takes that one Parameter
    (as Megatron shares the word embedding with its output layer under TP)."""
    aliases = tied_aliases(model)
    kv_shared: dict[str, int] = {}
    for path, spec in plan.modules.items():
        old = model.get_submodule(path)
        weight = old.weight
        device = weight.device
        new = _parallel_module(spec, layers, weight.dtype, device, sequence_parallel)
        if spec.parallel_class == "ParallelEmbedding":
            keep_embed_scale(old, new)
        for pname, param in old.named_parameters(recurse=False):
            target = getattr(new, pname)
            if device.type != "meta":
                with torch.no_grad():
                    target.copy_(plan.shard(f"{path}.{pname}", param.detach(), tp_rank))
            target.requires_grad_(param.requires_grad)
        set_submodule(model, path, new)
        if spec.kv_shared_group_size > 1:
            kv_shared[path] = spec.kv_shared_group_size
    retie(model, aliases)
    for path, local in plan.attention.items():
        attention = model.get_submodule(path)
        attention.num_key_value_groups = local.num_heads // local.num_kv_heads   # repeat_kv on this rank
        for attr, value in (("num_heads", local.num_heads), ("num_key_value_heads", local.num_kv_heads)):
            if hasattr(attention, attr):  # transformers 4.x attention modules keep the counts themselves
                setattr(attention, attr, value)
    return kv_shared


def kv_replica_groups(tp_groups: list[list[int]], factors: set[int]) -> dict[int, list[list[int]]]:
    """{factor m: replica groups}: in every TP group (global ranks, in TP-rank order, as NxD built them) the
    ranks whose TP ranks differ by tp / m hold the same KV heads (plan.kv_slots). NxD's own arrange_kv_groups
    writes global ranks i*tp + j instead, which differs where TP groups are strided (Trn1 TP=4), and keeps one
    size per process: so the backend makes its groups itself."""
    out = {}
    for m in factors:
        stride = len(tp_groups[0]) // m
        out[m] = [[group[i + j * stride] for j in range(m)] for group in tp_groups for i in range(stride)]
    return out


def materialise_buffers(module: nn.Module, device: torch.device) -> None:
    """Compute the buffers `module` still has on the meta device (its own, not its children's) on `device`.

    A model built on the meta device has meta buffers too, and non-persistent ones (rotary `inv_freq`) are in no
    checkpoint. They are computed by constructing the same class again from the module's config (transformers'
    rotary embeddings take `config`); a module holding weights or without a config cannot be rebuilt this way
    and raises, naming it, rather than training with made-up values."""
    meta = [name for name, buf in module._buffers.items() if buf is not None and buf.device.type == "meta"]
    if not meta:
        return
    config = getattr(module, "config", None)
    if config is None or any(True for _ in module.parameters(recurse=False)):
        raise RuntimeError(f"{type(module).__name__} has buffers {meta} on the meta device and cannot be rebuilt from "
                           f"a config: build the model with --init_from pointing at a Hugging Face folder instead.")
    with torch.device(device):
        fresh = type(module)(config=config)
    for name in meta:
        module._buffers[name] = fresh._buffers[name].to(device)
    for name, value in vars(module).items():   # tensors kept as plain attributes (original_inv_freq)
        if isinstance(value, torch.Tensor) and value.device.type == "meta":
            setattr(module, name, getattr(fresh, name).to(device))


def vocab_parallel_token_loss(parallel_layers: ModuleType) -> Callable:
    """A ScaleDownModel.token_loss over vocabulary-sharded logits: NxD's parallel_cross_entropy, -100 masked.

    The function is looked up on `parallel_layers` at each call, not captured: under pipeline parallelism NxD's
    tracer swaps that module attribute for a recorded call (autowrap), which a captured function would bypass."""
    def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        keep = labels != -100
        # parallel_cross_entropy modifies its input in place and needs valid targets everywhere
        losses = parallel_layers.parallel_cross_entropy(logits.float().contiguous(), labels.masked_fill(~keep, 0))
        return losses * keep
    return token_loss


def vocab_parallel_token_hits(parallel_layers: ModuleType, sharpness: float = 1e4) -> Callable:
    """A ScaleDownModel.token_hits over vocabulary-sharded logits, with no gather: the cross-entropy of the logits
    scaled by `sharpness` is about sharpness x (max logit - label logit), so it stays below log 2 only where the
    label's logit is the maximum (by more than ~1e-4 over the runner-up). Looked up at call time like token_loss."""
    def token_hits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        sharp = parallel_layers.parallel_cross_entropy(logits.float() * sharpness, labels.masked_fill(labels == -100, 0))
        return sharp < math.log(2.0)
    return token_hits


def layer_classes(model: nn.Module, plan: ParallelPlan) -> list[type]:
    """Decoder-layer classes of the compressor and generator (NxD checkpoints and partitions at these)."""
    seen: list[type] = []
    for name in plan.layer_names:
        cls = type(model.get_submodule(name))
        if cls not in seen:
            seen.append(cls)
    return seen
