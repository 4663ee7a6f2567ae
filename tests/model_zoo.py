# The model zoo: microscopic random models of each family users train with, saved as local folders (offline).
"""Each entry builds a model from the family's real `transformers` config class, keeping the quirks that break
harnesses (see /work/shared/reference/model_families.md), plus a tokenizer that follows the family's conventions
(BOS added or not, pad missing / pad == eos, a chat template reproducing the family's public prompt format,
added special tokens that need an embedding resize). `build(name, folder)` writes `save_pretrained` folders,
so tests take the user's path: `generator_model_name=<folder>`.

The tokenizers share the project's tiny byte-level BPE (scaledown/assets/tiny_tokenizer.json: every word of
the synthetic task is one token) and add each family's special tokens on top (ids after the BPE's); the model's
embeddings are then resized to the longer tokenizer, as a user who adds tokens does.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

import torch


# ---- chat templates (each reproduces one public format; comments name it) --------------------------------

# Llama 3 / 3.1 instruct (meta-llama/Llama-3.1-8B-Instruct, without the date header): header tokens, <|eot_id|>.
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + "
    "m['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# ChatML with a default system prompt when none is given (Qwen2.5-Instruct: "You are Qwen, created by ...";
# SmolLM2-Instruct: "You are a helpful AI assistant named SmolLM, trained by Hugging Face").
def chatml_template(default_system: Optional[str]) -> str:
    default = ("{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n" + default_system +
               "<|im_end|>\n' }}{% endif %}") if default_system else ""
    return (default + "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
            "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
            # Qwen3's switch: enable_thinking=False writes an empty think block
            "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\n\n</think>\n\n' }}{% endif %}"
            "{% endif %}")


# Mistral-7B-Instruct v0.1/v0.2: [INST] ... [/INST]; any system message raises (vllm#2080).
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)

# Gemma-2 instruct: <start_of_turn>user / model; a system message raises "System role not supported" (vllm#2964).
GEMMA2_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

# Gemma-3 instruct: the system message is folded into the first user turn (vllm#17149).
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{% set first_user_prefix = messages[0]['content'] + '\n\n' %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

# Phi-3-mini-4k-instruct (first release): <|user|> ... <|end|> <|assistant|>; system messages are silently
# dropped (transformers#30545), which is what a harness must notice.
PHI3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '<|end|>\n' + '<|assistant|>\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + '<|end|>\n' }}{% endif %}{% endfor %}"
)


@dataclass
class Tok:
    """A family's tokenizer conventions."""
    specials: list[str]                 # added special tokens (need an embedding resize)
    bos: Optional[str] = None
    eos: Optional[str] = None
    pad: Optional[str] = None           # None: the family ships without one
    add_bos: bool = False               # the tokenizer prepends BOS to plain text
    template: Optional[str] = None
    encoder: bool = False               # [CLS] a [SEP] b [SEP] (BERT-style post-processor)
    cls: Optional[str] = None
    sep: Optional[str] = None
    mask: Optional[str] = None


@dataclass
class Family:
    name: str
    kind: str                           # "generator" | "causal_lm" (compressor) | "encoder" (compressor)
    config_class: str                   # transformers config class
    config: dict[str, Any]
    tok: Tok
    model_class: str = "AutoModelForCausalLM"
    natural_compressor: str = "n_layers"  # for generators; a zoo compressor name or "n_layers"
    quirks: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


_DEC = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=256)
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
LLAMA3_TOK = Tok(["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
                 bos="<|begin_of_text|>", eos="<|eot_id|>", pad=None, add_bos=True, template=LLAMA3_TEMPLATE)
QWEN_TOK = Tok(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], bos=None, eos="<|im_end|>", pad="<|endoftext|>",
               template=chatml_template("You are Qwen, created by Alibaba Cloud. You are a helpful assistant."))

FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family("llama3", "generator", "LlamaConfig",
           dict(_DEC, tie_word_embeddings=True, rope_parameters=LLAMA3_ROPE, attention_bias=False, mlp_bias=False),
           LLAMA3_TOK, natural_compressor="llama32_1b",
           quirks="tied, llama3 RoPE, no biases, BOS added, no pad, Llama-3 header template"),
    Family("qwen2", "generator", "Qwen2Config", dict(_DEC, tie_word_embeddings=True), QWEN_TOK,
           natural_compressor="qwen2_05b",
           quirks="q/k/v biases, tied, no BOS, pad `<|endoftext|>`, ChatML with a default system prompt"),
    Family("qwen3", "generator", "Qwen3Config", dict(_DEC, head_dim=16, tie_word_embeddings=True),
           Tok(QWEN_TOK.specials + ["<think>", "</think>"], bos=None, eos="<|im_end|>", pad="<|endoftext|>",
               template=chatml_template(None)),
           quirks="q/k norms, head_dim 16 != hidden/heads 8, tied, ChatML"),
    Family("mistral", "generator", "MistralConfig", dict(_DEC, sliding_window=8, tie_word_embeddings=False),
           Tok(["<s>", "</s>", "[INST]", "[/INST]"], bos="<s>", eos="</s>", pad=None, add_bos=True,
               template=MISTRAL_TEMPLATE),
           quirks="sliding window 8, untied, BOS added, no pad, [INST] template that refuses a system role"),
    Family("gemma2", "generator", "Gemma2Config",
           dict(_DEC, head_dim=16, sliding_window=8, tie_word_embeddings=True, query_pre_attn_scalar=16,
                final_logit_softcapping=30.0, attn_logit_softcapping=50.0, attn_implementation="eager"),
           Tok(["<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"], bos="<bos>", eos="<eos>", pad="<pad>",
               add_bos=True, template=GEMMA2_TEMPLATE),
           quirks="sqrt(hidden) scale inside the embedding, logit + attention soft-capping, eager attention, "
                  "head_dim 16 != 8, sliding/full layers, template refuses a system role"),
    Family("gemma3", "generator", "Gemma3TextConfig",
           dict(_DEC, head_dim=16, sliding_window=8, tie_word_embeddings=True, query_pre_attn_scalar=16,
                layer_types=["sliding_attention", "full_attention"]),
           Tok(["<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"], bos="<bos>", eos="<eos>", pad="<pad>",
               add_bos=True, template=GEMMA3_TEMPLATE),
           quirks="sqrt(hidden) scale inside the embedding, q/k norms, per-layer-type RoPE and masks, "
                  "head_dim != hidden/heads, template folds the system prompt"),
    Family("phi3", "generator", "Phi3Config", dict(_DEC, tie_word_embeddings=False),
           Tok(["<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>"], bos=None, eos="<|endoftext|>",
               pad="<|endoftext|>", template=PHI3_TEMPLATE),
           quirks="fused qkv_proj and gate_up_proj, untied, pad == eos, template drops a system message silently"),
    Family("smollm2", "generator", "LlamaConfig", dict(_DEC, tie_word_embeddings=True),
           Tok(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], bos="<|im_start|>", eos="<|im_end|>",
               pad="<|im_end|>", template=chatml_template(
                   "You are a helpful AI assistant named SmolLM, trained by Hugging Face")),
           quirks="Llama architecture, tied, pad == eos, ChatML with a default system prompt"),
    # ---- compressors ----
    Family("llama32_1b", "causal_lm", "LlamaConfig",
           dict(_DEC, num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=True,
                rope_parameters=LLAMA3_ROPE), LLAMA3_TOK,
           quirks="Llama-3.2-1B shape: tied, llama3 RoPE, 4 queries per KV head"),
    Family("qwen2_05b", "causal_lm", "Qwen2Config", dict(_DEC, num_key_value_heads=2, tie_word_embeddings=True),
           QWEN_TOK, quirks="Qwen2.5-0.5B shape: q/k/v biases, tied, no BOS"),
    Family("modernbert", "encoder", "ModernBertConfig",
           dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                max_position_embeddings=256, global_attn_every_n_layers=3, local_attention=8),
           Tok(["[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"], pad="[PAD]", encoder=True, cls="[CLS]", sep="[SEP]",
               mask="[MASK]"), model_class="AutoModelForMaskedLM",
           quirks="fused Wqkv/Wi, local (sliding) + global layers, LayerNorm on inputs_embeds, tied decoder"),
    Family("bert", "encoder", "BertConfig",
           dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=128, type_vocab_size=2),
           Tok(["[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"], pad="[PAD]", encoder=True, cls="[CLS]", sep="[SEP]",
               mask="[MASK]"), model_class="AutoModelForMaskedLM",
           quirks="absolute positions + token types, biases everywhere, tied MLM decoder"),
    Family("roberta", "encoder", "RobertaConfig",
           dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=132, type_vocab_size=1),
           Tok(["<mask>"], bos="<s>", eos="</s>", pad="<pad>", encoder=True, cls="<s>", sep="</s>", mask="<mask>"),
           model_class="AutoModelForMaskedLM",
           quirks="positions start at padding_idx + 1, one token type, tied MLM decoder weight and bias"),
]}

GENERATORS = [n for n, f in FAMILIES.items() if f.kind == "generator"]
COMPRESSORS = [n for n, f in FAMILIES.items() if f.kind != "generator"]


def compressor_type(name: str) -> str:
    """ScaleDownConfig.compressor_type of a zoo compressor (or 'n_layers')."""
    if name == "n_layers":
        return "n_layers"
    return "modernbert" if FAMILIES[name].kind == "encoder" else "causal_lm"


def base_vocab_size() -> int:
    """Entries of the tiny BPE before any family token is added."""
    from tokenizers import Tokenizer

    from scaledown.models.tiny_tokenizer import _tokenizer_json
    return Tokenizer.from_str(_tokenizer_json()).get_vocab_size()


def build_tokenizer(tok: Tok):
    """The tiny BPE with the family's special tokens, BOS/EOS/PAD choices, post-processor and chat template."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    from scaledown.models.tiny_tokenizer import _tokenizer_json
    backend = Tokenizer.from_str(_tokenizer_json())
    backend.add_special_tokens(tok.specials)
    ids = {t: backend.token_to_id(t) for t in (tok.cls, tok.sep, tok.bos) if t}
    if tok.encoder:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{tok.cls} $A {tok.sep}", pair=f"{tok.cls} $A {tok.sep} $B:1 {tok.sep}:1",
            special_tokens=[(tok.cls, ids[tok.cls]), (tok.sep, ids[tok.sep])])
    elif tok.add_bos:
        backend.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=f"{tok.bos} $A", pair=f"{tok.bos} $A $B:1",
                                          special_tokens=[(tok.bos, ids[tok.bos])])])
    kwargs = {k: getattr(tok, k) for k in ("bos", "eos", "pad", "cls", "sep", "mask") if getattr(tok, k)}
    out = PreTrainedTokenizerFast(tokenizer_object=backend, **{f"{k}_token": v for k, v in kwargs.items()})
    if tok.template:
        out.chat_template = tok.template
    return out


def build(name: str, folder: str, seed: int = 0, sizes: Optional[dict[str, Any]] = None):
    """Write family `name` (random weights, its tokenizer) to `folder` with save_pretrained; returns folder.
    `sizes`: config values over the family's (e.g. the learning proof's wider, deeper model); quirks stay."""
    import transformers
    fam = FAMILIES[name]
    tokenizer = build_tokenizer(fam.tok)
    ids = lambda t: tokenizer.convert_tokens_to_ids(t) if t else None  # noqa: E731
    special = dict(bos_token_id=ids(fam.tok.bos or fam.tok.cls), eos_token_id=ids(fam.tok.eos or fam.tok.sep),
                   pad_token_id=ids(fam.tok.pad))
    if fam.tok.encoder:
        special.update(cls_token_id=ids(fam.tok.cls), sep_token_id=ids(fam.tok.sep))
    # the model starts at the base BPE's size (no special ids yet: they lie past it); the family's added
    # tokens then need the resize below, as for a user who adds tokens
    none = {k: None for k in special}
    config = getattr(transformers, fam.config_class)(vocab_size=base_vocab_size(), **none,
                                                     **{**fam.config, **(sizes or {})})
    torch.manual_seed(seed)
    model = getattr(transformers, fam.model_class).from_config(config)
    # new rows drawn like the others (as trained special tokens are), not at the mean (mean_resizing)
    model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=16, mean_resizing=False)
    with torch.no_grad():  # moves every weight off zero-init (Gemma norms, biases) so a lost tensor shows
        for n, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.05)
    for key, value in special.items():
        setattr(model.config, key, value)
        if getattr(model, "generation_config", None) is not None and key != "cls_token_id" and key != "sep_token_id":
            setattr(model.generation_config, key, value)
    model.config.vocab_size = model.get_input_embeddings().weight.shape[0]
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_all(root: str, names=None) -> dict[str, str]:
    """Every (or the named) zoo family under root/<name>; returns name -> folder."""
    return {n: build(n, os.path.join(root, n)) for n in (names or FAMILIES)}
