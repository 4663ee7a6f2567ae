# DTensor tensor parallel for the torch backend, derived from the one plan in scaledown/parallel (no second plan).
"""The rules of scaledown/parallel/rules.py (read through ParallelPlan, as the NxD backend and the converters read
them) become `torch.distributed.tensor.parallel` styles applied from outside the model (parallelize_module):

    plan layout of a module's weight          style                                  DTensor placement on "tp"
    column (partition_dim 0)                  ColwiseParallel                        weight Shard(0), bias Shard(0)
    column, the lm_head (ModuleSpec.loss)     ColwiseParallel(output Shard(-1), DTensor logits) + loss_parallel
    row (partition_dim 1)                     RowwiseParallel                        weight Shard(1), bias Replicate
    vocab (nn.Embedding)                      RowwiseParallel(input/output Replicate)  weight Shard(0)
    replicated                                none: a plain tensor on every tp rank

LoRA children follow the rules' docstring because the plan gives base_layer / lora_A / lora_B their own layouts:
column base -> lora_A plain, lora_B Colwise; row base -> lora_A Rowwise, lora_B plain (peft#3079 / #3614).
After placing, every parameter's placement is compared with the plan's layout (expected_placement), so a rule that
changes changes the placement or stops the run.

What DTensor cannot express of the NxD path is refused by name before any model is built (build_plan on a meta
skeleton: check_before_build): KV-head replication when tp exceeds the key/value heads (NxD kv_replication; torch
has none, torchtitan #2574 / #4016), and fused projections cut with a stride (ModernBERT Wqkv / Wi; fused projections
no rule names, such as Phi-3's qkv_proj / gate_up_proj, are refused by the plan itself).
"""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, loss_parallel, parallelize_module

from scaledown.errors import ConfigError
from scaledown.models.sharded_weights import whole
from scaledown.models.tied_weights import retie, tied_aliases
from scaledown.parallel import ParallelPlan
from scaledown.parallel import layout as L
from scaledown.parallel.plan import find_stacks

BACKEND = "--backend torch"


def _divisors_of_all(*sizes: int) -> list[int]:
    return [d for d in range(1, min(sizes) + 1) if all(s % d == 0 for s in sizes)]


def _family(module: nn.Module) -> str:
    return f"{getattr(getattr(module, 'config', None), 'model_type', '?')}, {type(module).__name__}"


def build_plan(model: nn.Module, tp: int, kv_replication: Optional[int] = None) -> ParallelPlan:
    """The shared ParallelPlan of `model` (real or meta) at `tp`, pp 1; ConfigError for what DTensor cannot place.

    Raises before anything is sharded: tp not dividing a stack's attention or key/value heads (names the stack, its
    family and the degrees that work), an explicit --kv_replication above 1, a fused projection, and everything the
    plan refuses itself (MLP width, vocabulary, unfused families)."""
    if kv_replication not in (None, 1):
        raise ConfigError(f"--kv_replication {kv_replication} is NxD's KV-head replication; {BACKEND} shards key/value "
                          f"heads without copies. Leave --kv_replication unset (or 1), or use --backend neuron.")
    stacks = find_stacks(model)
    for role, path, (heads, kv, _) in (("generator", stacks.generator, stacks.generator_geometry),
                                       ("compressor", stacks.backbone, stacks.backbone_geometry)):
        if tp > 1 and (heads % tp or kv % tp):
            owner = model.get_submodule(path)
            allowed = _divisors_of_all(heads, kv)
            raise ConfigError(
                f"{BACKEND} --tp {tp}: the {role} ({_family(owner)}) has {heads} attention heads and {kv} key/value "
                f"heads; DTensor tensor parallelism gives each rank whole heads and cannot replicate key/value heads "
                f"(NxD's kv_replication does: --backend neuron). Use --tp {' / '.join(map(str, allowed))} (degrees "
                f"dividing both {heads} and {kv}).")
    try:
        plan = ParallelPlan.for_model(model, tp=tp, pp=1, kv_replication=1 if tp > 1 else None)
    except ConfigError as exc:
        raise ConfigError(f"{BACKEND} shards with the same tensor-parallel plan as NxD (scaledown/parallel): {exc}") \
            from None
    strided = sorted({p.module for p in plan.params.values() if p.layout.stride > 1})
    if strided:
        role = "compressor" if strided[0].startswith(stacks.backbone + ".") else "generator"
        owner = model.get_submodule(stacks.backbone if role == "compressor" else stacks.generator)
        names = sorted({m.rsplit(".", 1)[-1] if "layers." not in m else m.split("layers.", 1)[1].split(".", 1)[1]
                        for m in strided})
        raise ConfigError(
            f"{BACKEND} --tp {tp}: the {role} ({_family(owner)}) fuses projections that the plan cuts with a stride "
            f"({', '.join(names)}: one matrix holds q, k and v, or input and gate); {BACKEND} does not shard fused "
            f"projections. Use --tp 1, a decoder compressor (--compressor_type n_layers or causal_lm), or "
            f"--backend neuron.")
    return plan


def expected_placement(layout: L.Layout):
    """The DTensor placement on the tp mesh dim that a plan layout means (Replicate: whole on every tp rank)."""
    if not layout.is_sharded:
        return Replicate()
    return Shard(layout.partition_dim)


def module_styles(model: nn.Module, plan: ParallelPlan) -> dict[str, object]:
    """{module path: ParallelStyle} for every nn.Linear / nn.Embedding whose weight the plan shards."""
    styles: dict[str, object] = {}
    for path, module in model.named_modules():
        entry = plan.params.get(f"{path}.weight")
        if entry is None or not isinstance(module, (nn.Linear, nn.Embedding)) or not entry.layout.is_sharded:
            continue
        layout, spec = entry.layout, plan.module_spec(path)
        if isinstance(module, nn.Embedding):            # vocabulary-parallel embedding: rows split, output summed
            styles[path] = RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate())
        elif layout.partition_dim == 0 and spec is not None and spec.loss == "parallel_cross_entropy":
            styles[path] = ColwiseParallel(output_layouts=Shard(-1), use_local_output=False)   # for loss_parallel
        elif layout.partition_dim == 0:
            styles[path] = ColwiseParallel()
        elif layout.partition_dim == 1:
            styles[path] = RowwiseParallel()
        else:
            raise AssertionError(f"{path}: no DTensor style for layout {layout.describe()}")
    return styles


def parallelize(model: nn.Module, tp_mesh, plan: Optional[ParallelPlan] = None) -> ParallelPlan:
    """Shard `model` in place over the 1-D `tp_mesh` as the plan says; returns the plan.

    Every rank holds the same full weights when this runs (ScaleDownModel draws them from config.seed), so each
    rank slices its own shard (src_data_rank=None: no broadcast). Tied embeddings stay one Parameter: embedding and
    head are both split on vocabulary rows (Shard(0)). Afterwards the model's token loss is the vocabulary-parallel
    cross-entropy, which must run, with its backward, inside the loss context (loss_context_for)."""
    plan = plan or build_plan(model, tp_mesh.size())
    aliases = tied_aliases(model)
    for path, style in module_styles(model, plan).items():
        parallelize_module(model.get_submodule(path), tp_mesh, style, src_data_rank=None)
    retie(model, aliases)
    modules = dict(model.named_modules())   # a pipeline stage lacks the other stages' attention modules
    for path, local in plan.attention.items():   # the heads one rank computes (unchanged without KV replication)
        attention = modules.get(path)
        if hasattr(attention, "num_key_value_groups"):
            attention.num_key_value_groups = local.num_heads // local.num_kv_heads
    check_placements(model, plan)
    model.token_loss = vocab_parallel_token_loss
    model.token_hits = gathered_token_hits
    return plan


def tp_placement(param: torch.Tensor):
    """The placement of `param` on the "tp" mesh dim (also after FSDP2 added data-parallel dims); None: a tensor the
    tp ranks each hold whole (plain, or a DTensor on data-parallel dims only)."""
    if not isinstance(param, DTensor):
        return None
    names = param.device_mesh.mesh_dim_names or ()
    return param.placements[names.index("tp")] if "tp" in names else None


def placements(model: nn.Module) -> dict[str, Optional[str]]:
    """{parameter name: its placement on the tp dim as text, None when every tp rank holds it whole}."""
    out = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        found = tp_placement(param)
        out[name] = None if found is None else repr(found)
    return out


def check_placements(model: nn.Module, plan: ParallelPlan) -> None:
    """Every parameter placed as its plan layout says (sharded: Shard(partition_dim); replicated: whole on every tp
    rank, plain or Replicate()); raises naming the first that is not."""
    for name, param in model.named_parameters(remove_duplicate=False):
        want = expected_placement(plan.params[name].layout)
        got = tp_placement(param) or Replicate()
        if got != want:
            raise RuntimeError(f"{name}: placed {got} but the plan's layout is {plan.params[name].layout.describe()}")


def vocab_parallel_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ScaleDownModel.token_loss over vocabulary-sharded DTensor logits (A, V/tp per rank): per-token cross-entropy
    in float32, -100 gives 0, as a plain (A,) tensor equal on every tp rank (torch loss_parallel: no rank gathers
    the vocabulary). Needs the loss context (loss_context_for) around the forward and the backward."""
    losses = F.cross_entropy(logits.float(), labels, reduction="none", ignore_index=-100)
    return losses.to_local() if isinstance(losses, DTensor) else losses


def gathered_token_hits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ScaleDownModel.token_hits over vocabulary-sharded logits: the argmax of the gathered logits (evaluation)."""
    return whole(logits).argmax(-1) == labels


def loss_context_for(tp: int) -> Callable[[], ContextManager]:
    """What each step's forward and backward run inside, chosen once per run: torch's loss_parallel when tp > 1 (the
    vocabulary-parallel loss needs it), else a context that does nothing."""
    return loss_parallel if tp > 1 else contextlib.nullcontext


@contextlib.contextmanager
def gathered_logits(model: nn.Module, plan: Optional[ParallelPlan]) -> Iterator[None]:
    """Inside: the vocabulary-parallel lm_head returns whole logits (generation picks tokens from all of them)."""
    paths = [] if plan is None else [p for p, spec in plan.modules.items() if spec.loss == "parallel_cross_entropy"]
    hooks = [model.get_submodule(p).register_forward_hook(lambda m, i, out: whole(out)) for p in paths]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def check_settings(config) -> None:
    """Tensor-parallel settings of the NxD path this backend does not run."""
    if config.tensor_parallel_size > 1 and config.sequence_parallel:
        raise ConfigError(f"{BACKEND} --tp {config.tensor_parallel_size}: --sequence_parallel is NxD's; this backend "
                          f"keeps activations whole on every tensor-parallel rank. Use --sequence_parallel false, or "
                          f"--backend neuron.")


def check_before_build(config, describe) -> None:
    """The run's tensor-parallel refusals from a meta skeleton of the model it will build (no weights read)."""
    check_settings(config)
    if config.tensor_parallel_size == 1:
        return
    build_plan(describe().skeleton(), config.tensor_parallel_size, getattr(config, "kv_replication", None))
