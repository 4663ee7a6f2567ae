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
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

import torch
from torch import nn

from scaledown.errors import ConfigError
from scaledown.models.compressor_builders import decoder_base
from scaledown.models.generator import base_causal_lm
from scaledown.parallel import layout as L
from scaledown.parallel import pipeline as P
from scaledown.parallel import rules as R
from scaledown.parallel.heads import AttentionGeometry, resolve_geometry


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
        shape[self.layout.partition_dim] = L.local_size(self.layout, shape[self.layout.partition_dim], tp)
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
        return L.shard(full, self.params[name].layout, self.tp, tp_rank)

    def unshard(self, name: str, shards: list[torch.Tensor]) -> tuple[torch.Tensor, list[str]]:
        return L.unshard(shards, self.params[name].layout, name)

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
