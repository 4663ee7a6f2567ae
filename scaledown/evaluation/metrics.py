# QA answer metrics as BERGEN computes them: normalisation, exact match, token F1, ROUGE-L, Match (gold contained).
from __future__ import annotations

import re
import string
from collections import Counter
from typing import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)
METRICS = ("em", "f1", "rouge_l", "match")   # the per-answer scores every evaluated system reports


def normalize_answer(text: str) -> str:
    """SQuAD/BERGEN normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golds))


def match(prediction: str, golds: Sequence[str]) -> float:
    """BERGEN's Match (OSCAR's "accuracy"): a normalised gold answer is a substring of the normalised output."""
    pred = normalize_answer(prediction)
    return float(any(normalize_answer(g) in pred for g in golds if normalize_answer(g)))


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    best = 0.0
    pred_tokens = normalize_answer(prediction).split()
    for gold in golds:
        gold_tokens = normalize_answer(gold).split()
        common = Counter(pred_tokens) & Counter(gold_tokens)
        overlap = sum(common.values())
        if not pred_tokens or not gold_tokens:
            best = max(best, float(pred_tokens == gold_tokens))
            continue
        if overlap == 0:
            continue
        precision, recall = overlap / len(pred_tokens), overlap / len(gold_tokens)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Longest common subsequence of two token lists (O(len a x len b), answers are short)."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, golds: Sequence[str]) -> float:
    """ROUGE-L F1 (LCS of normalised tokens), best over the golds; an empty output scores 0 as in BERGEN."""
    pred_tokens = normalize_answer(prediction).split()
    best = 0.0
    for gold in golds:
        gold_tokens = normalize_answer(gold).split()
        if not pred_tokens or not gold_tokens:
            continue
        lcs = _lcs_length(pred_tokens, gold_tokens)
        if lcs:
            precision, recall = lcs / len(pred_tokens), lcs / len(gold_tokens)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def answer_scores(prediction: str, golds: Sequence[str]) -> dict[str, float]:
    """Every metric of one answer against its golds, keyed as in metrics.json."""
    return {"em": exact_match(prediction, golds), "f1": token_f1(prediction, golds),
            "rouge_l": rouge_l(prediction, golds), "match": match(prediction, golds)}


def gold_answers(row: dict) -> list[str]:
    """All gold answers of a row: `answers` (list) and/or `answer`."""
    golds = [a for a in (row.get("answers") or []) if isinstance(a, str)]
    if isinstance(row.get("answer"), str) and row["answer"] not in golds:
        golds.append(row["answer"])
    return golds
