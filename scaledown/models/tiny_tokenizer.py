# The offline tokenizer of the tiny preset: a byte-level BPE read from its shipped asset, with no hub download.
"""The tokenizer is the shipped asset scaledown/assets/tiny_tokenizer.json, built by
`python -m scaledown.data.tiny_tokenizer_build` (from the synthetic task's words, which live in data/).

Byte-level, so any text encodes; trained on the synthetic task's vocabulary plus common English,
so every invented name and value of the built-in data is one token. The vocabulary is exactly
TINY_VOCAB_SIZE (a multiple of 8, so tensor parallelism up to 8 shards it evenly).
"""
from __future__ import annotations

import os
from functools import lru_cache

from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

from scaledown.errors import ConfigError

TINY_VOCAB_SIZE = 2048
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]
ASSET_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "tiny_tokenizer.json")

# A Mistral-like template that also accepts a system message (merged into the first user turn).
CHAT_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(sys='') %}{% for m in messages %}{% if m['role'] == 'system' %}"
    "{% set ns.sys = m['content'] + '\n\n' %}{% elif m['role'] == 'user' %}[INST] {{ ns.sys }}{{ m['content'] }} [/INST]"
    "{% set ns.sys = '' %}{% elif m['role'] == 'assistant' %} {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)


@lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    if not os.path.isfile(ASSET_PATH):
        raise ConfigError(f"{ASSET_PATH} (the tiny preset's tokenizer) is missing from this installation: reinstall "
                          f"scaledown (it ships as package data), or rebuild it with "
                          f"`python -m scaledown.data.tiny_tokenizer_build`.")
    with open(ASSET_PATH) as f:
        return f.read()


def load_tiny_tokenizer():
    """The tiny preset's tokenizer as a transformers PreTrainedTokenizerFast."""

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json()),
        unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok
