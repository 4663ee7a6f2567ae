# Models of the data pipeline by name: hub/local models, or `tiny` offline random ones; device and dtype.
"""`tiny` builds small randomly initialised models from configs with the project's offline tokenizer
(vocab 2048), seeded identically in every process so all workers hold the same weights:
a 2-layer BERT masked LM (SPLADE), a 2-layer BERT cross-encoder (1 label) and the tiny preset's
Mistral-shaped causal LM (teacher). Hub names load weights through transformers (no remote code
unless --trust_remote_code).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from transformers import (AutoModelForMaskedLM, AutoModelForSequenceClassification, BertConfig, BertForMaskedLM,
                          BertForSequenceClassification)

from scaledown.errors import ConfigError
from scaledown.models import loading
from scaledown.models.tiny_tokenizer import TINY_VOCAB_SIZE
from scaledown.data.prep_defaults import DEFAULT_RERANKER, DEFAULT_SPLADE, DEFAULT_TEACHER  # noqa: F401 (re-exported)
from scaledown.presets import TINY_GENERATOR, is_tiny_model

TINY = "tiny"
_TINY_SEED = 1234


def pick_device(requested: str = "auto"):
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def model_dtype(device):
    """bf16 on GPUs that support it (7B teachers), fp32 elsewhere (CPU bf16 is slow)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _seeded(build: Callable[[], Any]):
    """Build a random model with the same weights in every process."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_TINY_SEED)
        return build()


def tiny_bert_config(**overrides):
    values = dict(vocab_size=TINY_VOCAB_SIZE, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=128, max_position_embeddings=512, pad_token_id=3)
    values.update(overrides)
    return BertConfig(**values)


def tokenizer_for(name: str, trust_remote_code: bool = False):
    if name == TINY:
        return loading.load_tokenizer(TINY_GENERATOR)
    return loading.load_tokenizer(name, trust_remote_code)


def _place(model, device):
    return model.to(device=device, dtype=model_dtype(device)).eval()


def load_masked_lm(name: str, device, trust_remote_code: bool = False):
    """(model, tokenizer) of a masked LM: SPLADE reads its MLM head's logits."""
    if name == TINY:
        model = _seeded(lambda: BertForMaskedLM(tiny_bert_config()))
    else:
        model = loading.load_pretrained(AutoModelForMaskedLM, name, trust_remote_code)
    return _place(model, device), tokenizer_for(name, trust_remote_code)


def load_cross_encoder(name: str, device, trust_remote_code: bool = False):
    """(model, tokenizer) of a cross-encoder: sequence classification over (query, passage) pairs."""
    if name == TINY:
        model = _seeded(lambda: BertForSequenceClassification(tiny_bert_config(num_labels=1)))
    else:
        model = loading.load_pretrained(AutoModelForSequenceClassification, name, trust_remote_code)
    return _place(model, device), tokenizer_for(name, trust_remote_code)


def is_offline(name: str) -> bool:
    """Whether `name` selects an offline tiny random model (`tiny` or a tiny sentinel), built here, not loaded."""
    return name == TINY or is_tiny_model(name)


def teacher_model_name(name: str) -> str:
    """The name the causal-LM loader understands (`tiny` is the tiny preset's generator)."""
    return TINY_GENERATOR if name == TINY else name


def load_teacher_lm(name: str, device, trust_remote_code: bool = False):
    """(model, tokenizer) of the teacher causal LM."""
    resolved = teacher_model_name(name)
    if is_tiny_model(resolved):
        model = _seeded(lambda: loading.load_causal_lm(resolved))
    else:
        model = loading.load_causal_lm(resolved, trust_remote_code, dtype=model_dtype(device))
    return _place(model, device), tokenizer_for(resolved, trust_remote_code)


def check_available(name: str, flag: str, trust_remote_code: bool = False) -> None:
    """Fail before any heavy work when a hub model's config cannot be found (typo, offline)."""
    if is_offline(name):
        return
    try:
        loading.model_config(name, trust_remote_code)
    except ConfigError as exc:
        raise ConfigError(f"{flag} {name}: {exc} (`{flag} tiny` selects an offline tiny random model for "
                          f"trying the pipeline).") from None


def resolve_retriever(args) -> tuple[str, Optional[str]]:
    """(kind, model): bm25 | splade | a SPLADE model name | auto (SPLADE if loadable, else BM25)."""
    choice = args.retriever
    if choice == "bm25":
        return "bm25", None
    if choice == "auto" and args.retriever_model is None:
        try:
            check_available(DEFAULT_SPLADE, "--retriever_model", args.trust_remote_code)
        except ConfigError:
            print(f"note: {DEFAULT_SPLADE} cannot be loaded here (offline?); retrieving with BM25 instead. Pass "
                  f"--retriever splade to require SPLADE, or --retriever bm25 to skip this check.", flush=True)
            return "bm25", None
    model = args.retriever_model or (choice if choice not in ("auto", "splade") else DEFAULT_SPLADE)
    check_available(model, "--retriever_model", args.trust_remote_code)
    return "splade", model
