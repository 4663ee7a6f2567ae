# Built-in synthetic RAG data: facts about invented entities, drawn afresh per example, with distractors.
"""Every example invents its own facts, so the answer can only be read from the documents.

A document describes one invented entity ("Dravok was born in Pelmar. Dravok works as a potter.").
The query asks one attribute of one entity; the other documents are distractors about other
entities (often with the same attribute). Names and values come from fixed pools so that the
offline tiny tokenizer holds each as a single token; which entity has which value is random.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Iterator

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "tr", "st"]
_VOWELS = ["a", "e", "i", "o", "u"]
_CODAS = ["l", "n", "r", "s", "k", "th", "x", "m"]


def _invented_words(count: int, seed: int, syllables: int) -> list[str]:
    rng = random.Random(seed)
    words: set[str] = set()
    while len(words) < count:
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)) + rng.choice(_CODAS)
        words.add(word.capitalize())
    return sorted(words)


ENTITIES = _invented_words(256, seed=1, syllables=2)
CITIES = _invented_words(64, seed=2, syllables=1)
JOBS = ["potter", "baker", "sailor", "weaver", "farmer", "miner", "tailor", "painter", "singer", "doctor",
        "teacher", "pilot", "builder", "hunter", "fisher", "glazier", "jeweler", "carver", "brewer", "smith"]
COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white", "brown", "pink",
          "grey", "violet", "amber", "teal", "silver", "gold"]
ANIMALS = ["cat", "dog", "horse", "parrot", "rabbit", "goat", "lizard", "owl", "ferret", "turtle",
           "hamster", "pig", "sheep", "duck", "crow", "fox"]
FOODS = ["bread", "rice", "soup", "cheese", "apples", "plums", "figs", "honey", "beans", "fish",
         "noodles", "olives", "pears", "nuts", "eggs", "grapes"]
INSTRUMENTS = ["flute", "drum", "harp", "violin", "piano", "horn", "lute", "cello", "guitar", "organ",
               "trumpet", "banjo", "oboe", "zither", "bells", "fiddle"]

# attribute -> (value pool, document sentence, question)
RELATIONS: dict[str, tuple[list[str], str, str]] = {
    "city": (CITIES, "{e} was born in {v}.", "Where was {e} born?"),
    "job": (JOBS, "{e} works as a {v}.", "What does {e} work as?"),
    "color": (COLORS, "{e} likes the color {v}.", "Which color does {e} like?"),
    "pet": (ANIMALS, "{e} keeps a {v} as a pet.", "Which pet does {e} keep?"),
    "food": (FOODS, "{e} eats {v} every day.", "What does {e} eat every day?"),
    "music": (INSTRUMENTS, "{e} plays the {v}.", "What does {e} play?"),
}

# Six more relations over the same value pools, used only by long documents (SyntheticSpec.long_documents):
# up to 12 facts per document (about 80 tokens), each value pool shared by two relations, so the compressor
# must keep which relation a value belongs to ("eats figs every day" vs "never eats figs").
LONG_RELATIONS: dict[str, tuple[list[str], str, str]] = {
    "visited": (CITIES, "{e} has visited {v}.", "Which city has {e} visited?"),
    "mother": (JOBS, "{e}'s mother works as a {v}.", "What does {e}'s mother work as?"),
    "door": (COLORS, "{e}'s door is painted {v}.", "Which color is {e}'s door?"),
    "fear": (ANIMALS, "{e} is afraid of the {v}.", "Which animal is {e} afraid of?"),
    "never": (FOODS, "{e} never eats {v}.", "What does {e} never eat?"),
    "learning": (INSTRUMENTS, "{e} is learning the {v}.", "What is {e} learning?"),
}


@dataclass
class SyntheticSpec:
    """Shape of the built-in task. Defaults: 3 documents (1 relevant + 2 distractors), 3 facts each."""
    num_documents: int = 3          # documents per query (>= 3 gives distractors)
    facts_per_document: int = 3     # sentences per document (more facts: longer documents, harder lookup)
    distractor_same_relation: float = 0.5  # chance a distractor also states the asked relation
    long_documents: bool = False    # draw facts from RELATIONS + LONG_RELATIONS (up to 12 facts per document)

    def relations(self) -> dict[str, tuple[list[str], str, str]]:
        """The relations a document's facts (and the question) are drawn from."""
        table = {**RELATIONS, **LONG_RELATIONS} if self.long_documents else RELATIONS
        if not 1 <= self.facts_per_document <= len(table):
            raise ValueError(f"facts_per_document={self.facts_per_document} must be 1..{len(table)} "
                             f"({'long' if self.long_documents else 'short'} documents have {len(table)} relations)")
        return table


def make_example(rng: random.Random, spec: SyntheticSpec = SyntheticSpec()) -> dict:
    """One query with `spec.num_documents` documents; exactly one holds the answer."""
    table = spec.relations()
    entities = rng.sample(ENTITIES, spec.num_documents)
    asked = rng.choice(sorted(table))
    documents, gold = [], None
    for index, entity in enumerate(entities):
        relations = rng.sample(sorted(table), spec.facts_per_document)
        must_have = index == 0 or rng.random() < spec.distractor_same_relation
        if must_have and asked not in relations:
            relations[rng.randrange(len(relations))] = asked
        sentences = []
        for relation in relations:
            pool, sentence, _ = table[relation]
            value = rng.choice(pool)
            if index == 0 and relation == asked:
                gold = value
            sentences.append(sentence.format(e=entity, v=value))
        documents.append(" ".join(sentences))
    order = list(range(spec.num_documents))
    rng.shuffle(order)
    question = table[asked][2].format(e=entities[0])
    return {
        "query": question,
        "documents": [documents[i] for i in order],
        "answer": gold,
        # a cross-encoder would score the relevant document high: 1.0 vs 0.0 stands in for it
        "reranking_scores": [1.0 if i == 0 else 0.0 for i in order],
    }


def generate_examples(count: int, seed: int = 0, spec: SyntheticSpec = SyntheticSpec()) -> list[dict]:
    rng = random.Random(seed)
    return [make_example(rng, spec) for _ in range(count)]


def iter_examples(seed: int = 0, spec: SyntheticSpec = SyntheticSpec()) -> Iterator[dict]:
    """An endless stream of fresh examples (for step-based training)."""
    rng = random.Random(seed)
    while True:
        yield make_example(rng, spec)


def curriculum(warmup_steps: int, finetune_steps: int,
               full: SyntheticSpec = SyntheticSpec()) -> list[tuple[int, SyntheticSpec]]:
    """The built-in task's curriculum as (steps, spec) stages, easiest first.

    A random generator cannot find the relevant document among distractors at once (tiny transformers
    sit on a long plateau before they learn to look things up), so each phase starts with one
    document: the generator warm-up first copies a lone fact, then picks the asked fact out of three;
    the compression phase starts with one document (memory must carry the asked fact) before the full
    task with distractors, where the reranking head learns which document is about the queried entity.
    `full` is the final task (default: 3 documents, 3 facts); the easier stages keep its document length.
    """
    half = warmup_steps // 2
    easy = finetune_steps // 4 if warmup_steps else 0
    one = replace(full, num_documents=1)
    stages = [(half, replace(one, facts_per_document=1)),
              (warmup_steps - half, one),
              (easy, one),
              (finetune_steps - easy, full)]
    return [(steps, spec) for steps, spec in stages if steps > 0]


def curriculum_examples(stages: list[tuple[int, SyntheticSpec]], batch_size: int, seed: int = 0) -> list[dict]:
    """Rows for `stages`, in order (train them without shuffling): batch_size fresh rows per step."""
    rng = random.Random(seed)
    return [make_example(rng, spec) for steps, spec in stages for _ in range(steps * batch_size)]


def builtin_training_rows(config, spec: SyntheticSpec = SyntheticSpec()) -> list[dict]:
    """The tiny default's training rows: the curriculum sized to the run's steps, one fresh row per example.
    `spec`: the final task (default: the quick-start's 3 documents of 3 short facts)."""
    total = config.max_steps if config.max_steps > 0 else 1600
    warm = config.generator_warmup_steps(total)
    stages = curriculum(warm, total - warm, spec)
    return curriculum_examples(stages, config.batch_size, seed=config.seed)


def vocabulary_sentences() -> list[str]:
    """Sentences that mention every pool word in every template: the tokenizer's training text."""
    out = []
    for relation, (pool, sentence, question) in RELATIONS.items():
        for i, value in enumerate(pool):
            entity = ENTITIES[i % len(ENTITIES)]
            out.append(sentence.format(e=entity, v=value))
            out.append(question.format(e=entity))
    for entity in ENTITIES:
        out.append(f"{entity} was here. Who is {entity}? {entity}")
    return out
