# Which NxD parallel layer each linear / embedding of each architecture becomes, and the layouts that follow.
"""Rules are matched on a module's path relative to its stack (the generator's decoder, or the compressor
backbone). A *projection* is one logical linear; under peft it is split into `base_layer`, `lora_A.<adapter>`
and `lora_B.<adapter>` submodules, each with its own layout (NxD modules/lora/tp_layer.py):

    base ColumnParallelLinear  ->  lora_A replicated nn.Linear,   lora_B ColumnParallelLinear (same split as base)
    base RowParallelLinear     ->  lora_A RowParallelLinear (same input split as base),  lora_B replicated nn.Linear

Decoder stacks (Mistral, Llama and HF models with the same names): q_proj column with Q heads permuted to
their KV replica, k_proj / v_proj column with KV heads tiled, o_proj row with the Q permutation on its
inputs, gate_proj / up_proj column, down_proj row, embed_tokens vocab-parallel.
ModernBERT: Wqkv column stride 3 (fused MHA [q; k; v]), Wo row, Wi column stride 2 (fused [input; gate]),
mlp Wo row, tok_embeddings vocab-parallel. OSCAR-llama's projection MLP: projection.0 column, projection.2
row. The generator's lm_head is a vocabulary-parallel ColumnParallelLinear feeding parallel_cross_entropy.
Everything else (norms, memory / RR embeddings, rr_head, a single-linear projection) is replicated.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from scaledown.parallel import layout as L
from scaledown.parallel.layout import AttentionGeometry


@dataclass(frozen=True)
class Projection:
    style: str                      # "column" | "row" | "vocab"
    stride: int = 1
    heads: Optional[str] = None     # "q" | "kv" | None
    geometry: Optional[AttentionGeometry] = None
    lm_head: bool = False


@dataclass(frozen=True)
class ModuleSpec:
    """What replaces module `path` under NxD: `parallel_class(**kwargs)` from neuronx_distributed.parallel_layers.

    Sizes in kwargs are the full (unsharded) sizes NxD's constructors take. kv_shared_group_size > 1 marks a
    layer whose weights are KV replicas: the backend sums their gradients over the ranks holding the same KV heads
    (neuron/parallelize.kv_replica_groups, one group set per factor) before the optimizer step, as
    GQAQKVColumnParallelLinear does for its weight_k / weight_v over NxD's kv-shared group.
    loss="parallel_cross_entropy" marks the vocabulary-parallel lm_head whose logits feed NxD's parallel_cross_entropy.
    """
    path: str
    parallel_class: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    kv_shared_group_size: int = 1
    loss: Optional[str] = None


_DECODER = [
    (re.compile(r"^layers\.\d+\.self_attn\.q_proj$"), ("column", 1, "q")),
    (re.compile(r"^layers\.\d+\.self_attn\.[kv]_proj$"), ("column", 1, "kv")),
    (re.compile(r"^layers\.\d+\.self_attn\.o_proj$"), ("row", 1, "q")),
    (re.compile(r"^layers\.\d+\.mlp\.(gate|up)_proj$"), ("column", 1, None)),
    (re.compile(r"^layers\.\d+\.mlp\.down_proj$"), ("row", 1, None)),
    (re.compile(r"^embed_tokens$"), ("vocab", 1, None)),
]
_MODERNBERT = [
    (re.compile(r"^layers\.\d+\.attn\.Wqkv$"), ("column", 3, None)),
    (re.compile(r"^layers\.\d+\.attn\.Wo$"), ("row", 1, None)),
    (re.compile(r"^layers\.\d+\.mlp\.Wi$"), ("column", 2, None)),
    (re.compile(r"^layers\.\d+\.mlp\.Wo$"), ("row", 1, None)),
    (re.compile(r"^embeddings\.tok_embeddings$"), ("vocab", 1, None)),
]
_PROJECTION_MLP = [
    (re.compile(r"^projection\.0$"), ("column", 1, None)),
    (re.compile(r"^projection\.2$"), ("row", 1, None)),
]
FAMILIES = {"decoder": _DECODER, "modernbert": _MODERNBERT, "projection_mlp": _PROJECTION_MLP}

_LORA = re.compile(r"^(.*)\.(lora_A|lora_B)\.[^.]+$")


def split_peft_path(path: str) -> tuple[str, str]:
    """Module path -> (projection path, part) with part in base / lora_A / lora_B."""
    m = _LORA.match(path)
    if m:
        return m.group(1), m.group(2)
    if path.endswith(".base_layer"):
        return path[: -len(".base_layer")], "base"
    return path, "base"


def match(relative: str, family: str, geometry: Optional[AttentionGeometry]) -> Optional[Projection]:
    for pattern, (style, stride, heads) in FAMILIES[family]:
        if pattern.match(relative):
            return Projection(style, stride, heads, geometry if heads else None)
    return None


def param_layout(proj: Projection, part: str, param: str) -> L.Layout:
    """Layout of parameter `param` ("weight" / "bias") of the `part` submodule of a projection."""
    if proj.style == "vocab":
        return L.vocab() if param == "weight" else L.REPLICATED
    sharded_column = L.column(proj.stride, proj.heads, proj.geometry)
    sharded_row = L.row(proj.heads, proj.geometry)
    if proj.style == "column":
        if part == "lora_A":
            return L.REPLICATED
        return sharded_column                        # base weight / bias and lora_B split on the outputs
    if part == "lora_B" or param == "bias":          # row: output side (bias, lora_B) stays whole
        return L.REPLICATED
    return sharded_row                               # base weight and lora_A split on the inputs


def module_spec(path: str, proj: Projection, part: str, module) -> Optional[ModuleSpec]:
    """The NxD layer for one nn.Linear / nn.Embedding, or None when it stays a replicated torch module."""
    if proj.style == "vocab":
        return ModuleSpec(path, "ParallelEmbedding", {"num_embeddings": module.num_embeddings,
                                                      "embedding_dim": module.embedding_dim,
                                                      "padding_idx": module.padding_idx})
    has_bias = getattr(module, "bias", None) is not None
    if proj.style == "column" and part != "lora_A":
        m = proj.geometry.kv_replication if proj.heads == "kv" else 1
        kwargs = {"input_size": module.in_features, "output_size": module.out_features * m, "bias": has_bias,
                  "gather_output": False}
        if proj.stride > 1:
            kwargs["stride"] = proj.stride
        return ModuleSpec(path, "ColumnParallelLinear", kwargs, kv_shared_group_size=m,
                          loss="parallel_cross_entropy" if proj.lm_head else None)
    if proj.style == "row" and part != "lora_B":
        return ModuleSpec(path, "RowParallelLinear", {"input_size": module.in_features,
                                                      "output_size": module.out_features, "bias": has_bias,
                                                      "input_is_parallel": True})
    return None
