# Builds the tiny preset's offline tokenizer asset (scaledown/assets/tiny_tokenizer.json) from the synthetic task.
"""`python -m scaledown.data.tiny_tokenizer_build` rewrites the asset; tests/unit/test_models.py checks the shipped
file is what this builds. Byte-level BPE trained on the synthetic task's vocabulary plus common English, so every
invented name and value of the built-in data is one token (models/tiny_tokenizer.py loads it).
"""
from __future__ import annotations

import os

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from scaledown.atomic_files import write_text
from scaledown.data.synthetic import vocabulary_sentences
from scaledown.models.tiny_tokenizer import ASSET_PATH, SPECIAL_TOKENS, TINY_VOCAB_SIZE
from scaledown.prompt_text import OSCAR_SYSTEM_PROMPT

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
    lines = vocabulary_sentences() * 8
    lines += [" ".join(_ENGLISH[i:i + 12]) for i in range(0, len(_ENGLISH), 12)] * 8
    lines += [OSCAR_SYSTEM_PROMPT, "Background:\nQuestion: Query: Document: Answer:", "[INST] [/INST]"] * 8
    return lines


def build_tokenizer_json(vocab_size: int = TINY_VOCAB_SIZE) -> str:
    """Train the byte-level BPE deterministically and return its JSON."""

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    return tok.to_str()


def main() -> None:
    os.makedirs(os.path.dirname(ASSET_PATH), exist_ok=True)
    write_text(ASSET_PATH, build_tokenizer_json())
    print(f"wrote {ASSET_PATH}")


if __name__ == "__main__":
    main()
