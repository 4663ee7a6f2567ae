# The compressor module: (query, document) tokens + learned memory tokens -> memory embeddings (+ rerank score).
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from scaledown.models.fresh_weights import fresh_weights
from scaledown.models.sharded_weights import full_weights


def embedding_output_scale(embedding: nn.Module) -> float:
    """Factor the embedding module applies to its looked-up rows (1.0 for most families).

    Gemma-2/3 in transformers 5 scale by sqrt(hidden) inside the embedding (`embed_scale`, a non-persistent
    buffer, cast to the weight's dtype); vectors passed as `inputs_embeds` are not scaled again, so anything
    spliced in must already be at that size (model_families.md section 2.5).
    """
    scale = getattr(embedding, "embed_scale", None)
    if scale is None:
        return 1.0
    if torch.is_tensor(scale):
        return float(scale.to(embedding.weight.dtype)) if scale.device.type != "meta" else 1.0
    return float(scale)


def first_position(backbone: nn.Module) -> int:
    """Position id of a sequence's first token: padding_idx + 1 for RoBERTa-style absolute positions (their
    position table reserves rows up to the pad id; RobertaEmbeddings.create_position_ids_from_input_ids), else 0.
    From inputs_embeds such a model cannot see padding, so the compressor passes the ids itself."""
    table = getattr(getattr(backbone, "embeddings", None), "position_embeddings", None)
    pad = getattr(table, "padding_idx", None) if isinstance(table, nn.Embedding) else None
    return 0 if pad is None else int(pad) + 1


class MemoryNorm(nn.Module):
    """RMS-normalise memory embeddings and rescale them to the generator's token-embedding size.

    A compressor trained from scratch (or a copy of decoder layers without the final norm) emits
    states far larger than token embeddings; starting at the right scale lets the generator use them.
    """

    def __init__(self, dim: int, init_scale: float, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.full((dim,), float(init_scale)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms = x.float().pow(2).mean(-1, keepdim=True).add(self.eps).rsqrt()
        return (x.float() * rms).to(x.dtype) * self.weight


class MemoryTokens(nn.Module):
    """The learned <MEM> embeddings (and the <RR> one when reranking) appended to every (query, document) input.

    A module of its own so graph-based pipeline splitters (NxD's torch.fx partitioning) see one call that owns
    these weights; a bare parameter read in Compressor.forward would stay outside every pipeline stage.
    """

    def __init__(self, num_memory_tokens: int, hidden: int, std: float, enable_reranking: bool):
        super().__init__()
        # memory tokens start like ordinary (random) token embeddings of the backbone
        self.memory_embeddings = nn.Parameter(torch.randn(num_memory_tokens, hidden) * std)
        self.rr_embedding = nn.Parameter(torch.randn(1, hidden) * std) if enable_reranking else None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, T, H) token embeddings -> (N, l [+1], H) appended embeddings in their dtype."""
        # cat (a copy) even of one part: a view of a weight is no module output hooks can follow under no_grad
        parts = [self.memory_embeddings] if self.rr_embedding is None else [self.memory_embeddings, self.rr_embedding]
        return torch.cat(parts, 0).to(tokens.dtype).unsqueeze(0).expand(tokens.shape[0], -1, -1)


class Compressor(nn.Module):
    """Wraps a transformer backbone (decoder layers, encoder or small causal LM).

    Input: left-padded token ids of "query + document" (N, T). The module appends
    `num_memory_tokens` learned embeddings (and the RR embedding when reranking), runs the
    backbone, and returns the last-layer states at the memory positions, projected into the
    generator's embedding space, plus the RR position's score.
    """

    def __init__(self, backbone: nn.Module, num_memory_tokens: int, output_size: int,
                 projection: str = "none", mlp_hidden_size: int = 8096, enable_reranking: bool = False,
                 memory_norm_scale: Optional[float] = None):
        super().__init__()
        self.backbone = backbone
        if getattr(backbone.config, "use_cache", False):   # documents are read once: a KV cache only costs memory
            backbone.config.use_cache = False                # (and a cache object is what torch.fx cannot trace)
        hidden = backbone.config.hidden_size
        embedding = backbone.get_input_embeddings()
        embed = embedding.weight
        with full_weights([embed]):
            std = float(embed.detach().float().std()) if embed.numel() and embed.device.type != "meta" else 0.02
        std *= embedding_output_scale(embedding)  # the size of token inputs as the backbone's layers see them
        self.memory_tokens = MemoryTokens(num_memory_tokens, hidden, std, enable_reranking)
        self.rr_head = nn.Linear(hidden, 1) if enable_reranking else None
        with fresh_weights():   # the largest fresh weights (an MLP's): a sharding backend may draw them sharded
            if projection == "none":
                if hidden != output_size:
                    raise ValueError(f"compressor width {hidden} != generator width {output_size}; use a projection")
                self.projection = nn.Identity()
            elif projection == "linear":
                self.projection = nn.Linear(hidden, output_size)
            elif projection == "mlp":  # OSCAR-llama: Linear -> ReLU -> Linear
                self.projection = nn.Sequential(nn.Linear(hidden, mlp_hidden_size), nn.ReLU(),
                                                nn.Linear(mlp_hidden_size, output_size))
            else:
                raise ValueError(f"unknown projection {projection!r}")
        self.memory_norm = MemoryNorm(output_size, memory_norm_scale) if memory_norm_scale else None
        self.num_memory_tokens = num_memory_tokens
        # False: positions count from each row's first real token (left padding). True: 0..T-1 over every column,
        # padding included, as the released OSCAR models were trained (prompt_format="oscar", fixed-length inputs)
        self.absolute_positions = False
        self.first_position = first_position(backbone)

    @property
    def memory_embeddings(self) -> nn.Parameter:
        return self.memory_tokens.memory_embeddings

    @property
    def rr_embedding(self) -> Optional[nn.Parameter]:
        return self.memory_tokens.rr_embedding

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("memory_embeddings", "rr_embedding"):   # files saved before MemoryTokens existed
            if prefix + name in state_dict:
                state_dict[f"{prefix}memory_tokens.{name}"] = state_dict.pop(prefix + name)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def num_appended(self) -> int:
        return self.num_memory_tokens + (1 if self.rr_embedding is not None else 0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(N, T) left-padded ids -> memory (N, l, output_size), scores (N,) or None."""
        embeds = self.embed_inputs(input_ids)
        mask, position_ids = self.backbone_inputs(attention_mask)
        states = self.backbone(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids).last_hidden_state
        return self.read_memory(states)

    # the three parts of forward, also run on separate pipeline stages (training/backends/torch_native)
    def embed_inputs(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(N, T) ids -> (N, T + appended, H): token embeddings followed by the memory (and RR) embeddings."""
        tokens = self.backbone.get_input_embeddings()(input_ids)
        return torch.cat([tokens, self.memory_tokens(tokens)], dim=1)

    def backbone_inputs(self, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, T) mask -> the backbone's attention mask and position ids over T + appended positions."""
        n = attention_mask.shape[0]
        mask = torch.cat([attention_mask, attention_mask.new_ones(n, self.num_appended)], dim=1)
        # left padding: count positions from each row's first real token
        position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
        if self.absolute_positions:
            position_ids = torch.arange(mask.shape[1], device=mask.device).expand(n, -1)
        position_ids = position_ids + self.first_position   # RoBERTa numbers positions from padding_idx + 1
        return mask, position_ids

    def read_memory(self, states: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Last backbone states (N, T + appended, H) -> memory (N, l, output_size), scores (N,) or None."""
        memory = states[:, -self.num_appended:][:, :self.num_memory_tokens]
        memory = self.projection(memory)
        if self.memory_norm is not None:
            memory = self.memory_norm(memory)
        scores = None
        if self.rr_head is not None:
            scores = self.rr_head(states[:, -1]).squeeze(-1).float()
        return memory, scores
