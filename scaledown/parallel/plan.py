# ParallelPlan: the one TP/PP plan of a ScaleDownModel, read by the NxD backend and by the checkpoint converters.
"""Build it from any ScaleDownModel (real or on the meta device):

    plan = ParallelPlan.for_model(model, tp=8, pp=4)          # kv_replication: default smallest valid,
                                                               # per attention stack; an explicit value
                                                               # applies to the generator and a GQA compressor
    plan.modules[path]          -> ModuleSpec: the NxD layer replacing that nn.Linear / nn.Embedding
    plan.attention[path]        -> LocalAttention: head counts the attention module must use on one rank
    plan.params[name]           -> ParamPlan: full shape, Layout, pipeline stage
    plan.pipeline_cuts          -> NxDPPModel(pipeline_cuts=...)   (stage rule: parallel/pipeline.py)
    plan.shard(name, full, tp_rank) / plan.unshard(name, shards)    tensors of one parameter
    plan.local_state_dict(full, tp_rank, pp_rank) / plan.full_state_dict({(tp, pp): shard})   whole files

Parameter names in NxD shards (the NxD model's state_dict) are ScaleDownModel's own names: the backend swaps
each module for its parallel layer in place and keeps separate q_proj / k_proj / v_proj and gate_proj /
up_proj, because peft gives each projection its own LoRA A and B; NxD's fused GQAQKV LoRA shares one A
over q, k and v and so cannot hold the same adapter. The shard of q_proj / k_proj / v_proj equals NxD's
GQAQKVColumnParallelLinear(fuse_qkv=False) weight_q / weight_k / weight_v, and [gate_r; up_r] equals a
gate_up_proj (stride 2) shard, so fusing later is a rename (ParamPlan.nxd_name is the single place).

Under the KV replication, an attention module on one rank computes plan.attention[path].num_heads query
heads over num_kv_heads local KV heads, local query head i using KV head i // (num_heads / num_kv_heads)
(HF's repeat_kv with num_key_value_groups set to that ratio).

The arithmetic that needs the tensor-parallel degree is all here: GQA head counts under tp (KV replication,
the Q head order of each rank, below), the slice of each tensor a rank holds (shard / unshard), local shapes;
layout.py only describes how a tensor is split.

Attention heads: GQA with fewer key/value heads than tensor-parallel ranks (NxD `GQAQKVColumnParallelLinear`, Trn1).

The KV heads are replicated `m = kv_replication` times by *tiling* (Trn1: K0 K1 .. K(kv-1), K0 K1 .., m
times; Trn2 would repeat_interleave instead) and the tiled list is cut into `tp` contiguous pieces:
rank r holds tiled positions [r*c, (r+1)*c) with c = kv*m/tp, i.e. KV heads (r*c + j) % kv.

Each rank must hold the query heads that attend to *its* KV heads, in the order its local repeat_kv
expects (local Q head i uses local KV slot i // g). Position p of the tiled list (KV head p % kv, copy
p // kv) owns the copy-th block of g = heads / (kv*m) query heads of that KV group. With c = 1 this is
NxD's checkpoint converter order (Q0,Q4,Q1,Q5,.. for 8 heads, 2 KV heads, tp 8); with m = 1 it is the
plain contiguous split. o_proj's input columns follow the same Q order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence

import torch
from torch import nn

from scaledown.errors import ConfigError
from scaledown.models.compressor_builders import decoder_base
from scaledown.models.generator import base_causal_lm
from scaledown.parallel import layout as L
from scaledown.parallel import pipeline as P
from scaledown.parallel import rules as R
from scaledown.parallel.layout import AttentionGeometry


# ---- attention heads under tensor parallelism (Trn1 GQA) ----------------------------------------------
def valid_kv_replications(num_heads: int, num_kv_heads: int, tp: int) -> list[int]:
    """Replication factors m NxD accepts: m divides tp, kv*m divides by tp, each rank keeps whole GQA groups."""
    return [m for m in range(1, tp + 1)
            if tp % m == 0 and (num_kv_heads * m) % tp == 0 and num_heads % (num_kv_heads * m) == 0]


def default_kv_replication(num_heads: int, num_kv_heads: int, tp: int) -> int:
    """The smallest valid factor (1 when the KV heads already divide tp); 0 when none exists."""
    found = valid_kv_replications(num_heads, num_kv_heads, tp)
    return found[0] if found else 0


def resolve_geometry(stack: str, num_heads: int, num_kv_heads: int, head_dim: int, tp: int,
                     kv_replication: int | None = None) -> AttentionGeometry:
    """Check that `tp` can shard these heads and pick the KV replication (explicit or the default)."""
    if num_heads % tp:
        divisors = [d for d in range(1, num_heads + 1) if num_heads % d == 0]
        raise ConfigError(f"--tp {tp} does not divide the {stack}'s {num_heads} attention heads. Use a tensor-parallel "
                          f"degree that divides them: {', '.join(map(str, divisors))}.")
    valid = valid_kv_replications(num_heads, num_kv_heads, tp)
    if kv_replication is None:
        if not valid:
            raise ConfigError(f"the {stack}'s {num_kv_heads} key/value heads cannot be replicated to fit --tp {tp} "
                              f"with {num_heads} query heads. Use a --tp that divides {num_heads} and is a multiple "
                              f"or divisor of {num_kv_heads}.")
        kv_replication = valid[0]
    elif kv_replication not in valid:
        hint = f"valid values for --tp {tp}: {', '.join(map(str, valid))}" if valid else "no value works for this --tp"
        raise ConfigError(f"--kv_replication {kv_replication} does not fit the {stack} ({num_heads} heads, "
                          f"{num_kv_heads} key/value heads) at --tp {tp}: it must divide tp, make heads x kv_replication "
                          f"a multiple of tp and keep whole query groups per rank; {hint}.")
    return AttentionGeometry(stack, num_heads, num_kv_heads, head_dim, kv_replication)


def kv_slots(geom: AttentionGeometry, tp: int, rank: int) -> list[tuple[int, int]]:
    """(kv head, copy) held by `rank`, in local order."""
    per_rank = geom.num_kv_heads * geom.kv_replication // tp
    positions = range(rank * per_rank, (rank + 1) * per_rank)
    return [(p % geom.num_kv_heads, p // geom.num_kv_heads) for p in positions]


def kv_heads_of_rank(geom: AttentionGeometry, tp: int, rank: int) -> list[int]:
    """KV head indices (rows of k_proj / v_proj in head units) that `rank` holds."""
    return [head for head, _ in kv_slots(geom, tp, rank)]


def q_heads_of_rank(geom: AttentionGeometry, tp: int, rank: int) -> list[int]:
    """Query head indices `rank` holds, in the order its local GQA grouping needs."""
    g = geom.heads_per_kv_copy
    group = geom.num_heads // geom.num_kv_heads   # query heads per KV head
    heads: list[int] = []
    for kv_head, copy in kv_slots(geom, tp, rank):
        start = kv_head * group + copy * g
        heads.extend(range(start, start + g))
    return heads


# ---- one tensor's slice on one rank -------------------------------------------------------------
def local_size(layout: L.Layout, full: int, tp: int) -> int:
    """Size along partition_dim on one rank."""
    if layout.heads == "kv":
        g = layout.geometry
        return full * g.kv_replication // tp
    return full // tp


def _head_index(layout: L.Layout, tp: int, rank: int) -> list[int]:
    g = layout.geometry
    return q_heads_of_rank(g, tp, rank) if layout.heads == "q" else kv_heads_of_rank(g, tp, rank)


def _by_heads(tensor: torch.Tensor, dim: int, head_dim: int) -> torch.Tensor:
    return tensor.unflatten(dim, (tensor.shape[dim] // head_dim, head_dim))


def shard(full: torch.Tensor, layout: L.Layout, tp: int, rank: int) -> torch.Tensor:
    """The slice of `full` that TP rank `rank` of `tp` holds (a new contiguous tensor)."""
    if not layout.is_sharded or tp == 1:
        return full.detach().clone().contiguous()
    dim = layout.partition_dim
    if layout.heads:
        index = torch.tensor(_head_index(layout, tp, rank))
        heads = _by_heads(full, dim, layout.geometry.head_dim).index_select(dim, index)
        return heads.flatten(dim, dim + 1).contiguous()
    chunk = full.shape[dim] // (tp * layout.stride)
    pieces = full.split(chunk, dim=dim)[rank::tp]
    return torch.cat(pieces, dim=dim).contiguous()


def unshard(shards: Sequence[torch.Tensor], layout: L.Layout, name: str = "tensor") -> tuple[torch.Tensor, list[str]]:
    """Rebuild the full tensor from every rank's shard (rank order). Returns (full, notes).

    Notes list copies that should be identical but are not (replicated tensors, KV replicas); the
    first copy wins, as in NxD's own converter.
    """
    tp = len(shards)
    notes: list[str] = []
    if not layout.is_sharded or tp == 1:
        for r in range(1, tp):
            if not torch.equal(shards[r], shards[0]):
                notes.append(f"{name}: replicated copy on tp rank {r} differs from rank 0")
        return shards[0].detach().clone(), notes
    dim = layout.partition_dim
    if layout.heads:
        g = layout.geometry
        count = g.num_heads if layout.heads == "q" else g.num_kv_heads
        first = _by_heads(shards[0], dim, g.head_dim)
        shape = list(first.shape)
        shape[dim] = count
        out = first.new_empty(shape)
        filled = [False] * count
        for r, piece in enumerate(shards):
            heads = _by_heads(piece, dim, g.head_dim)
            for local, head in enumerate(_head_index(layout, tp, r)):
                value = heads.select(dim, local)
                if filled[head]:
                    if not torch.equal(out.select(dim, head), value):
                        notes.append(f"{name}: KV head {head} on tp rank {r} differs from its first copy")
                    continue
                out.select(dim, head).copy_(value)
                filled[head] = True
        return out.flatten(dim, dim + 1), notes
    per_stride = [piece.chunk(layout.stride, dim=dim) for piece in shards]
    ordered = [per_stride[r][s] for s in range(layout.stride) for r in range(tp)]
    return torch.cat(ordered, dim=dim), notes


@dataclass(frozen=True)
class ParamPlan:
    name: str
    shape: tuple[int, ...]
    layout: L.Layout
    stage: int
    module: str

    @property
    def nxd_name(self) -> str:
        """Key of this tensor in NxD model / optimizer shards (the same name; see the module docstring)."""
        return self.name

    def local_shape(self, tp: int) -> tuple[int, ...]:
        if not self.layout.is_sharded:
            return self.shape
        shape = list(self.shape)
        shape[self.layout.partition_dim] = local_size(self.layout, shape[self.layout.partition_dim], tp)
        return tuple(shape)


@dataclass(frozen=True)
class LocalAttention:
    """Head counts one TP rank's attention module computes with (set num_heads / num_key_value_groups)."""
    path: str
    num_heads: int
    num_kv_heads: int
    head_dim: int


@dataclass
class Stacks:
    """Where the model's parts sit, by module path."""
    generator: str            # the generator's decoder (has .layers, .embed_tokens, .norm)
    lm_head: str
    backbone: str             # compressor backbone
    backbone_family: str      # "decoder" | "modernbert"
    generator_geometry: tuple[int, int, int]
    backbone_geometry: tuple[int, int, int]


def _geometry_of(config) -> tuple[int, int, int]:
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return heads, kv, head_dim


def find_stacks(model: nn.Module) -> Stacks:
    paths = {id(m): name for name, m in model.named_modules()}
    lm = base_causal_lm(model.generator)
    backbone = model.compressor.backbone
    family = "modernbert" if getattr(backbone.config, "model_type", "") == "modernbert" else "decoder"
    return Stacks(generator=paths[id(decoder_base(lm))], lm_head=paths[id(lm.get_output_embeddings())],
                  backbone=paths[id(backbone)], backbone_family=family,
                  generator_geometry=_geometry_of(lm.config), backbone_geometry=_geometry_of(backbone.config))


class ParallelPlan:
    def __init__(self, tp: int, pp: int, params: dict[str, ParamPlan], modules: dict[str, R.ModuleSpec],
                 attention: dict[str, LocalAttention], layer_names: list[str],
                 geometries: dict[str, AttentionGeometry]):
        self.tp, self.pp = tp, pp
        self.params, self.modules, self.attention = params, modules, attention
        self.layer_names = layer_names
        self.geometries = geometries
        self.pipeline_cuts = P.pipeline_cuts(layer_names, pp)

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def for_model(cls, model: nn.Module, tp: int = 1, pp: int = 1, kv_replication: Optional[int] = None
                  ) -> "ParallelPlan":
        if tp < 1:
            raise ConfigError(f"--tp {tp} is invalid: use 1 or more tensor-parallel ranks.")
        stacks = find_stacks(model)
        _check_supported(model, stacks, tp)
        if pp > 1 and _tied_lm_head(model):
            raise ConfigError(f"--pp {pp}: the generator ties lm_head to its input embeddings, which live on the first "
                              f"and last pipeline stages; one weight cannot be shared across stages (NxD, --backend "
                              f"torch). "
                              f"Use --pp 1, or untie them (tie_word_embeddings=False) before training "
                              f"(generator: {_family(base_causal_lm_of(model))}).")
        gen_geo = resolve_geometry("generator", *stacks.generator_geometry, tp, kv_replication)
        bb_geo = resolve_geometry("compressor", *stacks.backbone_geometry, tp,
                                  None if stacks.backbone_family == "modernbert" else kv_replication)
        geometries = {"generator": gen_geo, "compressor": bb_geo}
        layers = _layer_names(model, stacks)
        layer_stage = P.stage_of_layers(layers, pp)
        modules: dict[str, R.ModuleSpec] = {}
        layouts: dict[str, tuple[L.Layout, str]] = {}
        for path, module in model.named_modules():
            if not isinstance(module, (nn.Linear, nn.Embedding)):
                continue
            proj_path, part = R.split_peft_path(path)
            proj = _projection(proj_path, stacks, geometries)
            if proj is None:
                continue
            _check_divisible(proj_path, proj, module, part, tp)
            spec = R.module_spec(path, proj, part, module)
            if spec is not None:
                modules[path] = spec
            for pname, _ in module.named_parameters(recurse=False):
                layouts[f"{path}.{pname}"] = (R.param_layout(proj, part, pname), path)
        params: dict[str, ParamPlan] = {}
        for name, tensor in model.state_dict().items():
            lay, owner = layouts.get(name, (L.REPLICATED, name.rsplit(".", 1)[0]))
            params[name] = ParamPlan(name, tuple(tensor.shape), lay, _stage(name, stacks, layers, layer_stage, pp),
                                     owner)
        attention = _local_attention(model, stacks, geometries, tp)
        return cls(tp, pp, params, modules, attention, layers, geometries)

    # ---- questions a backend asks -------------------------------------------------------------
    def module_spec(self, path: str) -> Optional[R.ModuleSpec]:
        return self.modules.get(path)

    def stage_of(self, name: str) -> int:
        return self.params[name].stage

    def names_on_stage(self, pp_rank: int) -> list[str]:
        return [n for n, p in self.params.items() if p.stage == pp_rank]

    def kv_replication(self, stack: str = "generator") -> int:
        return self.geometries[stack].kv_replication

    # ---- tensors ------------------------------------------------------------------------------
    def shard(self, name: str, full: torch.Tensor, tp_rank: int) -> torch.Tensor:
        return shard(full, self.params[name].layout, self.tp, tp_rank)

    def unshard(self, name: str, shards: list[torch.Tensor]) -> tuple[torch.Tensor, list[str]]:
        return unshard(shards, self.params[name].layout, name)

    def local_state_dict(self, full: Mapping[str, torch.Tensor], tp_rank: int, pp_rank: int,
                         names: Optional[Iterable[str]] = None) -> dict[str, torch.Tensor]:
        """What the (tp_rank, pp_rank) shard file holds: every parameter of that stage, sliced for tp_rank."""
        wanted = set(full) if names is None else set(names)
        return {n: self.shard(n, full[n], tp_rank) for n in self.names_on_stage(pp_rank) if n in wanted}

    def full_state_dict(self, shards: Mapping[tuple[int, int], Mapping[str, torch.Tensor]]
                        ) -> tuple[dict[str, torch.Tensor], list[str]]:
        """Rebuild full tensors from {(tp_rank, pp_rank): shard dict}; returns (state, notes on unequal copies)."""
        out: dict[str, torch.Tensor] = {}
        notes: list[str] = []
        for name, plan in self.params.items():
            pieces = [shards[(t, plan.stage)].get(name) for t in range(self.tp)]
            if all(p is None for p in pieces):
                continue
            full, found = self.unshard(name, pieces)
            out[name] = full
            notes += found
        return out, notes


def base_causal_lm_of(model: nn.Module) -> nn.Module:
    return base_causal_lm(model.generator)


def _family(module: nn.Module) -> str:
    """'model_type, Class' of a transformers model, for messages."""
    return f"{getattr(module.config, 'model_type', '?')}, {type(module).__name__}"


def _check_supported(model: nn.Module, stacks: Stacks, tp: int) -> None:
    """Refuse by name, before any weights load, what the rules cannot place (model_families.md section 4 (d)).

    A backbone without a `layers` stack (BERT / RoBERTa encoders: encoder.layer.N) has nothing to cut into
    pipeline stages. Under tp > 1, a Linear of a decoder layer that matches no rule is a fused projection
    (Phi-3's qkv_proj / gate_up_proj): leaving it whole while o_proj / down_proj are row-parallel would give
    wrong shapes, and a stride split cannot cut [q; k; v] of unequal GQA sizes.
    """
    backbone = model.get_submodule(stacks.backbone)
    if not isinstance(getattr(backbone, "layers", None), nn.ModuleList):
        raise ConfigError(
            f"NxD cannot place the compressor backbone ({_family(backbone)}): its layers are not a `layers` stack "
            f"like the decoder families' and ModernBERT's, which the pipeline cuts and tensor-parallel rules "
            f"need. Use a ModernBERT model as --compressor_model_name, or --compressor_type causal_lm / n_layers; "
            f"or train this compressor with DeepSpeed or on one process.")
    if tp == 1:
        return
    for root, family, role in ((stacks.generator, "decoder", "generator"),
                               (stacks.backbone, stacks.backbone_family, "compressor")):
        stack = model.get_submodule(root)
        unmatched = sorted({R.split_peft_path(path)[0] for path, m in stack.named_modules()
                            if isinstance(m, nn.Linear) and path.startswith("layers.")
                            and R.split_peft_path(path)[1] == "base"
                            and R.match(R.split_peft_path(path)[0], family, None) is None})
        if unmatched:
            names = sorted({p.split(".", 2)[2] for p in unmatched})
            owner = base_causal_lm_of(model) if role == "generator" else stack
            raise ConfigError(
                f"--tp {tp}: the {role} ({_family(owner)}) has projections NxD tensor parallelism cannot shard: "
                f"{', '.join(names)} (fused: one matrix holds q, k and v, or gate and up). The plan shards separate "
                f"q_proj / k_proj / v_proj and gate_proj / up_proj only. Use --tp 1 (--pp still splits the "
                f"layers), or train this family with DeepSpeed or on one process.")


def _tied_lm_head(model: nn.Module) -> bool:
    lm = base_causal_lm(model.generator)
    return lm.get_output_embeddings().weight is lm.get_input_embeddings().weight


def _layer_names(model: nn.Module, stacks: Stacks) -> list[str]:
    """Decoder layers in forward order: compressor backbone layers, then generator layers."""
    backbone = model.get_submodule(stacks.backbone)
    generator = model.get_submodule(stacks.generator)
    return ([f"{stacks.backbone}.layers.{i}" for i in range(len(backbone.layers))]
            + [f"{stacks.generator}.layers.{i}" for i in range(len(generator.layers))])


def _projection(path: str, stacks: Stacks, geometries: dict[str, AttentionGeometry]) -> Optional[R.Projection]:
    if path == stacks.lm_head:
        return R.Projection("column", lm_head=True)
    for root, family, geo in ((stacks.generator, "decoder", geometries["generator"]),
                              (stacks.backbone, stacks.backbone_family, geometries["compressor"])):
        if path.startswith(root + "."):
            return R.match(path[len(root) + 1:], family, geo)
    if path.startswith("compressor."):
        return R.match(path[len("compressor."):], "projection_mlp", None)
    return None


def _check_divisible(path: str, proj: R.Projection, module: nn.Module, part: str, tp: int) -> None:
    if proj.heads or tp == 1:
        return  # attention heads were checked by resolve_geometry
    if proj.style == "vocab" or proj.lm_head:
        size, what = (module.num_embeddings if proj.style == "vocab" else module.out_features), "vocabulary"
    elif part != "base":
        return  # LoRA parts split the same dimension as their base layer
    elif proj.style == "column":
        size, what = module.out_features // proj.stride, "width"
    else:
        size, what = module.in_features, "width"
    if size % tp:
        name = ("compressor_mlp_hidden_dim" if ".projection." in f".{path}." else
                "MLP width (intermediate_size)" if what == "width" else "vocabulary size")
        raise ConfigError(f"--tp {tp} does not divide the {name} {size} of {path}. Use a tensor-parallel degree "
                          f"that divides {size}" + (", or pad the vocabulary (resize the embeddings) to a multiple "
                                                    f"of {tp}" if what == "vocabulary" else "") + ".")


def _stage(name: str, stacks: Stacks, layers: list[str], layer_stage: dict[str, int], pp: int) -> int:
    """The stage rule of parallel/pipeline.py applied to one parameter."""
    for layer in layers:
        if name.startswith(layer + "."):
            return layer_stage[layer]
    first_generator_layer = layer_stage[f"{stacks.generator}.layers.0"]
    if name.startswith(f"{stacks.generator}.embed_tokens."):
        return 0
    if name.startswith("compressor."):
        inside = name[len(stacks.backbone) + 1:] if name.startswith(stacks.backbone + ".") else None
        if name.startswith("compressor.memory_tokens.") or (
                inside is not None and inside.split(".")[0] in ("embed_tokens", "embeddings")):
            return 0
        return first_generator_layer
    return pp - 1


def _local_attention(model: nn.Module, stacks: Stacks, geometries: dict[str, AttentionGeometry], tp: int
                     ) -> dict[str, LocalAttention]:
    out = {}
    for root, key, attr in ((stacks.generator, "generator", "self_attn"),
                            (stacks.backbone, "compressor", "self_attn" if stacks.backbone_family == "decoder"
                             else "attn")):
        geo = geometries[key]
        for i in range(len(model.get_submodule(root).layers)):
            path = f"{root}.layers.{i}.{attr}"
            out[path] = LocalAttention(path, geo.num_heads // tp, geo.num_kv_heads * geo.kv_replication // tp,
                                       geo.head_dim)
    return out
