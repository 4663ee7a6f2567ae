# FLOPs per query of RAG with and without compression, counted on meta-device models (no weights, no hub).
"""torch.utils.flop_counter.FlopCounterMode counts every matmul and attention call of a real forward
pass of the real modules (transformers' Mistral/Llama, ScaleDown's Compressor) built on the meta
device, so a 7B model costs no memory and no download. What is counted (`ASSUMPTIONS`) is written
next to the numbers by `scaledown bench flops`.
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModel, AutoModelForCausalLM, DynamicCache, LlamaConfig, MistralConfig

from scaledown.config import ScaleDownConfig
from scaledown.models.compressor_builders import build_compressor, nlayers_backbone_empty
from scaledown.models.generator import base_causal_lm

# Published hyper-parameters (config.json of the hub checkpoints), so no hub access is needed.
MISTRAL_7B_INSTRUCT_V02 = dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                               num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                               max_position_embeddings=32768, rope_theta=1e6, sliding_window=None,
                               tie_word_embeddings=False)
LLAMA_32_1B_INSTRUCT = dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                            num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                            max_position_embeddings=131072, rope_theta=500000.0, tie_word_embeddings=True)

# OSCAR (arXiv 2504.07109 v1) Table 1, Mistral-7B generator, TFLOPs per query.
PAPER_TFLOPS = {"uncompressed": 20.33, "generation_x16": 3.49, "total_5L": 6.53, "total_8L": 8.36,
                "total_llama": 6.15}

ASSUMPTIONS = (
    "batch 1; one query of 128 tokens, 10 documents of 128 tokens, 32 generated tokens (OSCAR App. D)",
    "prompt = query + documents (uncompressed) or query + 10 x 8 memory embeddings (x16); chat-template and "
    "system-prompt tokens are not counted (--template_tokens adds them)",
    "generation = one prefill over the prompt + 31 one-token decode steps reading the KV cache (the prefill "
    "yields the 1st token); decode steps are affine in the cache length, so the first and last are counted "
    "and the rest interpolated exactly",
    "lm_head counted only where logits are needed: the last prompt position and each decode step "
    "(what transformers' generate does, logits_to_keep=1)",
    "attention counted as FlopCounterMode counts scaled_dot_product_attention: the full T x T score and "
    "value products (causal masking does not halve it); embeddings, norms, rotary and softmax not counted",
    "compression: each of the 10 documents is one compressor forward over its input + 8 memory tokens; "
    "OSCAR's released code truncates the compressor input to doc_max_length + 8 tokens (N-layers: "
    "'Query: q Document: d') or + 3 (OSCAR-llama: tokenizer pair, truncation='only_second'), i.e. 136 and "
    "131 tokens with a 128-token query",
    "OSCAR-llama adds the 2-layer ReLU MLP (2048 -> 8096 -> 4096) on the 8 memory vectors; no final norm in "
    "N-layers compressors; LoRA adapters not counted (mergeable)",
)


@dataclass
class Setup:
    query_tokens: int = 128
    num_documents: int = 10
    document_tokens: int = 128
    memory_tokens: int = 8            # per document: 128 / 16
    generated_tokens: int = 32
    template_tokens: int = 0

    def prompt_tokens(self, compressed: bool) -> int:
        per_doc = self.memory_tokens if compressed else self.document_tokens
        return self.template_tokens + self.query_tokens + self.num_documents * per_doc


def count(fn: Callable[[], object]) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def meta_causal_lm(config):
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def _cache_kwarg(lm) -> str:
    """transformers >= 5 names the KV cache argument `cache`, older releases `past_key_values`."""
    return "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"


def generation_flops(lm, prompt_tokens: int, generated_tokens: int) -> dict[str, float]:
    """FLOPs of greedy generation: prefill (logits of the last position) + decode steps with a KV cache."""
    cache_name = _cache_kwarg(lm)
    cache = DynamicCache(config=lm.config)

    def step(tokens: int):
        ids = torch.zeros(1, tokens, dtype=torch.long, device="meta")
        return lm(input_ids=ids, use_cache=True, logits_to_keep=1, **{cache_name: cache})

    prefill = count(lambda: step(prompt_tokens))
    decode_steps = generated_tokens - 1
    decode = 0.0
    if decode_steps > 0:
        first = count(lambda: step(1))
        last = first
        if decode_steps > 1:
            with torch.no_grad():
                step(decode_steps - 2)                  # fill the cache up to the last step's length
            last = count(lambda: step(1))
        decode = decode_steps * (first + last) / 2      # affine in cache length: exact
    return {"prefill": float(prefill), "decode": float(decode), "total": float(prefill + decode)}


def meta_compressor(config, generator, backbone_config=None):
    """ScaleDown's Compressor for `config` on the meta device (the backbone built from its config)."""
    with torch.device("meta"):
        if config.compressor_type == "n_layers":
            backbone = nlayers_backbone_empty(generator.config, config.num_compressor_layers)
        else:
            backbone = AutoModel.from_config(backbone_config)
        # memory_norm rescales by a statistic of real weights; it adds no matmul, so leave it out here
        return build_compressor(dataclasses.replace(config, memory_norm=False), generator, backbone=backbone)


def compression_flops(compressor, num_documents: int, input_tokens: int) -> float:
    """One compressor forward over `num_documents` inputs of `input_tokens` (memory tokens are appended)."""
    # sdpa's mask shortcut reads the padding mask's values, which meta tensors have not; eager attention
    # runs the same two products (counted identically) without looking at values
    compressor.backbone.config._attn_implementation = "eager"
    ids = torch.zeros(num_documents, input_tokens, dtype=torch.long, device="meta")
    mask = torch.ones(num_documents, input_tokens, dtype=torch.long, device="meta")
    return float(count(lambda: compressor(ids, mask)))


def oscar_table(setup: Optional[Setup] = None, query_max_length: int = 64,
                progress: Optional[Callable[[str], None]] = None) -> dict:
    """OSCAR's Table 1 rows (TFLOPs) counted here, beside the paper's, plus ScaleDown's own compressor inputs."""
    setup = setup or Setup()
    say = progress or (lambda _: None)
    tera = 1e12
    generator = meta_causal_lm(MistralConfig(**MISTRAL_7B_INSTRUCT_V02))
    say("generation (uncompressed)")
    uncompressed = generation_flops(generator, setup.prompt_tokens(False), setup.generated_tokens)
    say("generation (x16)")
    compressed = generation_flops(generator, setup.prompt_tokens(True), setup.generated_tokens)
    doc_len = setup.document_tokens
    variants = {"5L": ("n_layers", 5, None, doc_len + 8), "8L": ("n_layers", 8, None, doc_len + 8),
                "llama": ("causal_lm", 8, LlamaConfig(**LLAMA_32_1B_INSTRUCT), doc_len + 3)}
    # ScaleDown's own compressor input: BOS 'Query:' query '\n' 'Document:' document (~7 marker tokens)
    scaledown_input = 7 + min(setup.query_tokens, query_max_length) + doc_len
    out = {"uncompressed": uncompressed["total"] / tera, "generation_x16": compressed["total"] / tera}
    details: dict = {"uncompressed": _tera(uncompressed), "generation_x16": _tera(compressed)}
    for name, (kind, layers, backbone_config, oscar_input) in variants.items():
        say(f"compression ({name})")
        config = ScaleDownConfig(compressor_type=kind, num_compressor_layers=layers, doc_max_length=doc_len,
                                 num_memory_tokens=setup.memory_tokens, compressor_model_name="meta-device")
        compressor = meta_compressor(config, generator, backbone_config)
        oscar = compression_flops(compressor, setup.num_documents, oscar_input) / tera
        ours = compression_flops(compressor, setup.num_documents, scaledown_input) / tera
        out[f"compression_{name}"] = oscar
        out[f"total_{name}"] = out["generation_x16"] + oscar
        details[f"compression_{name}"] = {"input_tokens": oscar_input, "tflops": oscar,
                                          "scaledown_input_tokens": scaledown_input, "scaledown_inputs_tflops": ours,
                                          "scaledown_inputs_total": out["generation_x16"] + ours}
    return {"tflops": out, "paper": dict(PAPER_TFLOPS), "setup": dataclasses.asdict(setup), "details": details,
            "assumptions": list(ASSUMPTIONS)}


def _tera(parts: dict[str, float]) -> dict[str, float]:
    return {k: v / 1e12 for k, v in parts.items()}


def model_tflops(model, num_documents: int = 10, query_tokens: int = 128, generated_tokens: int = 32) -> dict:
    """TFLOPs per query of a ScaleDown model's three systems at OSCAR's setup, with its own prompt layout.

    Documents are doc_max_length tokens; the query is cut at query_max_length as the model does; template
    and marker tokens are measured on the model's own tokenizer.
    """
    config, inputs = model.config, model.inputs
    generator = meta_causal_lm(base_causal_lm(model.generator).config)
    query, docs = "q", ["d"] * num_documents
    query_len = len(inputs.query_ids(query))
    template = {mode: len(inputs.prompt(query, docs, mode)[0]) - query_len for mode in ("memory", "text", "none")}
    template["memory"] -= num_documents * config.num_memory_tokens
    template["text"] -= sum(len(inputs.document_ids(d)) for d in docs)
    q = min(query_tokens, config.query_max_length)
    prompts = {"scaledown": template["memory"] + q + num_documents * config.num_memory_tokens,
               "uncompressed": template["text"] + q + num_documents * config.doc_max_length,
               "no_docs": template["none"] + q}
    out = {name: generation_flops(generator, tokens, generated_tokens)["total"] / 1e12
           for name, tokens in prompts.items()}
    markers = (len(inputs.compressor_ids(query, docs[0])) - len(inputs.query_ids(query, inputs.compressor_tokenizer))
               - len(inputs.document_ids(docs[0], inputs.compressor_tokenizer)))
    compressor = meta_compressor(config, generator, model.compressor.backbone.config)
    out["compression"] = compression_flops(compressor, num_documents, markers + q + config.doc_max_length) / 1e12
    out["scaledown"] += out["compression"]
    return out
