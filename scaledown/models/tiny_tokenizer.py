# The offline tokenizer of the tiny preset: a byte-level BPE built here, with no hub download.
"""Build with `python -m scaledown.models.tiny_tokenizer` (writes scaledown/assets/tiny_tokenizer.json).

Byte-level, so any text encodes; trained on the synthetic task's vocabulary plus common English,
so every invented name and value of the built-in data is one token. The vocabulary is exactly
TINY_VOCAB_SIZE (a multiple of 8, so tensor parallelism up to 8 shards it evenly).
"""
from __future__ import annotations

import os
from functools import lru_cache

from scaledown.atomic_files import write_text

TINY_VOCAB_SIZE = 2048
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]
ASSET_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "tiny_tokenizer.json")

# A Mistral-like template that also accepts a system message (merged into the first user turn).
CHAT_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(sys='') %}{% for m in messages %}{% if m['role'] == 'system' %}"
    "{% set ns.sys = m['content'] + '\n\n' %}{% elif m['role'] == 'user' %}[INST] {{ ns.sys }}{{ m['content'] }} [/INST]"
    "{% set ns.sys = '' %}{% elif m['role'] == 'assistant' %} {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)

_ENGLISH = """
The a an and or of to in on at for with from by as is are was were be been being it its this that these those
what which who whom whose where when why how there here not no yes do does did have has had will would can could
should may might must shall one two three four five six seven eight nine ten first second last new old good great
small large long short high low young early late big little same other many much more most some any each every all
both few own such only also very just than then now well even back still way after before over under between into
through during without again against about above below up down out off city country world state people person man
woman child day year time week month history river mountain island sea lake forest house school music film book
song team game war king queen church party company university group family name part place number water air fire
earth light music word question answer document background query information relevant provided extract assistant
helpful task briefly possible capital population president born works lives plays likes keeps eats known called
located founded built written released published won national international american british french german english
""".split()


def training_corpus() -> list[str]:
    from scaledown.prompt_text import OSCAR_SYSTEM_PROMPT
    from scaledown.data.synthetic import vocabulary_sentences

    lines = vocabulary_sentences() * 8
    lines += [" ".join(_ENGLISH[i:i + 12]) for i in range(0, len(_ENGLISH), 12)] * 8
    lines += [OSCAR_SYSTEM_PROMPT, "Background:\nQuestion: Query: Document: Answer:", "[INST] [/INST]"] * 8
    return lines


def build_tokenizer_json(vocab_size: int = TINY_VOCAB_SIZE) -> str:
    """Train the byte-level BPE deterministically and return its JSON."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    return tok.to_str()


@lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    if os.path.isfile(ASSET_PATH):
        with open(ASSET_PATH) as f:
            return f.read()
    return build_tokenizer_json()


def load_tiny_tokenizer():
    """The tiny preset's tokenizer as a transformers PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json()),
        unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


if __name__ == "__main__":
    os.makedirs(os.path.dirname(ASSET_PATH), exist_ok=True)
    text = build_tokenizer_json()
    write_text(ASSET_PATH, text)
    print(f"wrote {ASSET_PATH}")
