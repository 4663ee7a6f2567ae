# Reference of every NxD TP rank's local computation, run in one process over NxD shard FILES (test oracle).
"""Independent of scaledown.parallel: it knows NxD's layer semantics, not the converter's plan.

- ColumnParallelLinear (gather_output=False): rank r computes x @ W_r^T, its slice of the outputs.
- RowParallelLinear (input_is_parallel): rank r computes x_r @ W_r^T; the outputs are all-reduced (summed).
- ParallelEmbedding: rank r looks up ids in [r*V/tp, (r+1)*V/tp), zeros elsewhere; all-reduced.
- Attention on rank r uses its local Q and KV heads; local Q head i attends with local KV head i // (lq / lkv),
  which is only right if the shards put each Q head next to its (replicated) KV head.
- LoRA (NxD modules/lora/tp_layer.py): column base -> A replicated, B column; row base -> A row-parallel
  (all-reduced), B replicated.
- lm_head: vocabulary-parallel logits, cross-entropy from three all-reduces (max, sum exp, target logit),
  like NxD's parallel_cross_entropy; all-gather only to compare logits.
Pipeline: stage s owns L//pp layers (remainder to the last stages); every weight is read from the shard
files of the stage that runs it (embeddings: stage 0; the compressor tail: the stage of the generator's first
layer; final norm and lm_head: the last stage). A weight missing from that stage's files fails the run.
"""
from __future__ import annotations

import glob
import math
import os
import re

import torch
import torch.nn.functional as F

from scaledown.checkpoint.nxd_files import read_shard


def load_shards(tag_dir: str) -> tuple[dict[tuple[int, int], dict[str, torch.Tensor]], int, int]:
    shards = {}
    for path in glob.glob(os.path.join(tag_dir, "model", "dp_rank_00_tp_rank_*_pp_rank_*.pt")):
        match = re.fullmatch(r"dp_rank_00_tp_rank_(\d+)_pp_rank_(\d+)\.pt", os.path.basename(path))
        if match:  # not the xser X.pt.info.pt beside each shard
            shards[tuple(map(int, match.groups()))] = read_shard(path)
    tp = 1 + max(t for t, _ in shards)
    pp = 1 + max(p for _, p in shards)
    return shards, tp, pp


def stage_counts(num_layers: int, pp: int) -> list[int]:
    counts = [num_layers // pp] * pp
    for i in range(num_layers % pp):
        counts[pp - 1 - i] += 1
    return counts


class RankReference:
    def __init__(self, tag_dir: str, model):
        self.shards, self.tp, self.pp = load_shards(tag_dir)
        self.model = model                       # the unsharded model: config and head sizes only, never weights
        self.config = model.config
        self.lc = len(model.compressor.backbone.layers)
        self.lg = len(model.generator.get_base_model().model.layers)
        self.layer_stage = [s for s, n in enumerate(stage_counts(self.lc + self.lg, self.pp)) for _ in range(n)]
        self.scale = self.config.lora_alpha / self.config.lora_r

    # ---- weights of one rank, from the files of one stage -------------------------------------------
    def w(self, name: str, rank: int, stage: int) -> torch.Tensor:
        shard = self.shards[(rank, stage)]
        if name not in shard:
            raise KeyError(f"{name} is not in the shard files of pipeline stage {stage} (tp rank {rank})")
        return shard[name].float()

    def replicated(self, name: str, stage: int) -> torch.Tensor:
        copies = [self.w(name, r, stage) for r in range(self.tp)]
        assert all(torch.equal(c, copies[0]) for c in copies), f"{name} differs between tp ranks"
        return copies[0]

    # ---- parallel layers ---------------------------------------------------------------------------------
    def embedding(self, name: str, ids: torch.Tensor, stage: int) -> torch.Tensor:
        total = 0
        for r in range(self.tp):
            weight = self.w(name, r, stage)
            start = r * weight.shape[0]
            local = ids - start
            inside = (local >= 0) & (local < weight.shape[0])
            total = total + F.embedding(local.clamp(0, weight.shape[0] - 1), weight) * inside.unsqueeze(-1)
        return total

    def column(self, prefix: str, x: torch.Tensor, rank: int, stage: int, lora: bool) -> torch.Tensor:
        base = f"{prefix}.base_layer" if lora else prefix
        y = x @ self.w(f"{base}.weight", rank, stage).T
        if f"{base}.bias" in self.shards[(rank, stage)]:
            y = y + self.w(f"{base}.bias", rank, stage)
        if lora:
            a = self.w(f"{prefix}.lora_A.default.weight", rank, stage)
            b = self.w(f"{prefix}.lora_B.default.weight", rank, stage)
            y = y + self.scale * (x @ a.T) @ b.T
        return y

    def row(self, prefix: str, xs: list[torch.Tensor], stage: int, lora: bool) -> torch.Tensor:
        base = f"{prefix}.base_layer" if lora else prefix
        out = sum(xs[r] @ self.w(f"{base}.weight", r, stage).T for r in range(self.tp))
        if f"{base}.bias" in self.shards[(0, stage)]:
            out = out + self.replicated(f"{base}.bias", stage)
        if lora:
            a_out = sum(xs[r] @ self.w(f"{prefix}.lora_A.default.weight", r, stage).T for r in range(self.tp))
            out = out + self.scale * a_out @ self.replicated(f"{prefix}.lora_B.default.weight", stage).T
        return out

    # ---- decoder layer -----------------------------------------------------------------------------------
    def decoder_layer(self, prefix: str, h, cos, sin, mask, stage: int, lora: bool, head_dim: int, eps: float):
        x = rms_norm(h, self.replicated(f"{prefix}.input_layernorm.weight", stage), eps)
        outs = []
        for r in range(self.tp):
            q = heads(self.column(f"{prefix}.self_attn.q_proj", x, r, stage, lora), head_dim)
            k = heads(self.column(f"{prefix}.self_attn.k_proj", x, r, stage, lora), head_dim)
            v = heads(self.column(f"{prefix}.self_attn.v_proj", x, r, stage, lora), head_dim)
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)
            group = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(head_dim) + mask
            att = scores.softmax(-1) @ v
            outs.append(att.transpose(1, 2).flatten(2))
        h = h + self.row(f"{prefix}.self_attn.o_proj", outs, stage, lora)
        x = rms_norm(h, self.replicated(f"{prefix}.post_attention_layernorm.weight", stage), eps)
        acts = [F.silu(self.column(f"{prefix}.mlp.gate_proj", x, r, stage, lora)) *
                self.column(f"{prefix}.mlp.up_proj", x, r, stage, lora) for r in range(self.tp)]
        return h + self.row(f"{prefix}.mlp.down_proj", acts, stage, lora)

    def decoder(self, root: str, first_layer: int, count: int, embeds, attention_mask, hf_config, lora: bool):
        head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        cos, sin = rotary(positions, head_dim, rope_theta(hf_config))
        mask = causal_padding_mask(attention_mask)
        h = embeds
        for i in range(count):
            stage = self.layer_stage[first_layer + i]
            h = self.decoder_layer(f"{root}.layers.{i}", h, cos, sin, mask, stage, lora, head_dim,
                                   hf_config.rms_norm_eps)
        return h

    # ---- the ScaleDown forward -----------------------------------------------------------------------
    def compress(self, ids, mask):
        comp = self.model.compressor
        kind = self.config.compressor_type
        tail = self.layer_stage[self.lc]                         # stage of the generator's first layer
        tokens = self.embedding("compressor.backbone.embed_tokens.weight", ids, 0)
        extra = self.replicated("compressor.memory_tokens.memory_embeddings", 0)
        if comp.rr_embedding is not None:
            extra = torch.cat([extra, self.replicated("compressor.memory_tokens.rr_embedding", 0)])
        n = ids.shape[0]
        embeds = torch.cat([tokens, extra.unsqueeze(0).expand(n, -1, -1)], 1)
        full_mask = torch.cat([mask, mask.new_ones(n, extra.shape[0])], 1)
        states = self.decoder("compressor.backbone", 0, self.lc, embeds, full_mask, comp.backbone.config, lora=False)
        if kind == "causal_lm":
            states = rms_norm(states, self.replicated("compressor.backbone.norm.weight", tail),
                              comp.backbone.config.rms_norm_eps)
        memory = states[:, -comp.num_appended:][:, :comp.num_memory_tokens]
        if kind == "causal_lm":
            hidden = [F.relu(self.column("compressor.projection.0", memory, r, tail, lora=False)) for r in range(self.tp)]
            memory = self.row("compressor.projection.2", hidden, tail, lora=False)
        if comp.memory_norm is not None:
            w = self.replicated("compressor.memory_norm.weight", tail)
            memory = memory * (memory.pow(2).mean(-1, keepdim=True) + comp.memory_norm.eps).rsqrt() * w
        scores = None
        if comp.rr_head is not None:
            scores = (states[:, -1] @ self.replicated("compressor.rr_head.weight", tail).T
                      + self.replicated("compressor.rr_head.bias", tail)).squeeze(-1)
        return memory, scores

    @torch.no_grad()
    def forward(self, batch):
        """(loss, logits of the answer tokens gathered over the vocabulary, rerank loss or None)."""
        from scaledown.models.generator import splice_memory
        cfg = self.config
        root = "generator.base_model.model.model"
        ids, cmask = batch["compressor_input_ids"], batch["compressor_attention_mask"]
        b, k, t = ids.shape
        embeds = self.embedding(f"{root}.embed_tokens.weight", batch["input_ids"], 0)
        real = batch["document_mask"].view(-1).nonzero().squeeze(-1)
        mem, sc = self.compress(ids.view(b * k, t)[real], cmask.view(b * k, t)[real])
        memory = mem.new_zeros((b * k,) + mem.shape[1:]).index_copy(0, real, mem).view(b, k * cfg.num_memory_tokens, -1)
        embeds = splice_memory(embeds, memory, batch["memory_slots"])
        lm_config = self.model.generator.get_base_model().config
        hidden = self.decoder(root, self.lc, self.lg, embeds, batch["attention_mask"], lm_config, lora=True)
        last = self.pp - 1
        hidden = rms_norm(hidden, self.replicated(f"{root}.norm.weight", last), lm_config.rms_norm_eps)
        labels = batch["labels"][:, 1:]
        selected = labels != -100
        h = hidden[:, :-1][selected]
        target = labels[selected]
        local = [h @ self.w("generator.base_model.model.lm_head.weight", r, last).T for r in range(self.tp)]
        ce = vocab_parallel_cross_entropy(local, target).sum() / selected.sum().clamp(min=1)
        loss, rerank = ce, None
        if sc is not None and cfg.enable_reranking:
            scores = sc.new_zeros(b * k).index_copy(0, real, sc).view(b, k)
            scored = batch["reranking_mask"] & batch["document_mask"]
            rerank = (scores - batch["reranking_scores"].float())[scored].pow(2).sum() / scored.sum().clamp(min=1)
            loss = ce + cfg.reranking_loss_weight * rerank
        return loss, torch.cat(local, -1), rerank


# ---- pure functions --------------------------------------------------------------------------------------
def vocab_parallel_cross_entropy(local_logits: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """Per-token loss from vocabulary shards, with the three all-reduces of NxD's parallel_cross_entropy."""
    maximum = torch.stack([l.max(-1).values for l in local_logits]).max(0).values          # all-reduce MAX
    sum_exp = sum((l - maximum.unsqueeze(-1)).exp().sum(-1) for l in local_logits)          # all-reduce SUM
    picked = 0
    for r, l in enumerate(local_logits):
        start = r * l.shape[-1]
        inside = (target >= start) & (target < start + l.shape[-1])
        idx = (target - start).clamp(0, l.shape[-1] - 1).unsqueeze(-1)
        picked = picked + l.gather(-1, idx).squeeze(-1) * inside                             # all-reduce SUM
    return sum_exp.log() + maximum - picked


def rms_norm(x, weight, eps):
    return x * (x.pow(2).mean(-1, keepdim=True) + eps).rsqrt() * weight


def heads(x, head_dim):
    return x.unflatten(-1, (-1, head_dim)).transpose(1, 2)      # (N, heads, T, head_dim)


def rope_theta(config) -> float:
    theta = getattr(config, "rope_theta", None)
    if theta is None:
        theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
    return float(theta)


def rotary(positions, head_dim, theta):
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = positions.float().unsqueeze(-1) * inv
    emb = torch.cat([freqs, freqs], -1)
    return emb.cos().unsqueeze(1), emb.sin().unsqueeze(1)


def rotate(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * cos + rotated * sin


def causal_padding_mask(attention_mask):
    t = attention_mask.shape[1]
    allowed = torch.ones(t, t, dtype=torch.bool).tril().unsqueeze(0) & attention_mask.bool().unsqueeze(1)
    return torch.where(allowed, 0.0, torch.finfo(torch.float32).min).unsqueeze(1)
