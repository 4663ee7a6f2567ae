# Answer metrics (EM, F1, ROUGE-L, Match) and ranking metrics (nDCG@10, MRR) against hand-computed cases.
import math

import pytest

from scaledown.evaluation.answers import score_predictions
from scaledown.evaluation.metrics import (answer_scores, exact_match, gold_answers, match, normalize_answer,
                                          rouge_l, token_f1)
from scaledown.evaluation.ranking import ndcg_at_k, ranking_metrics, reciprocal_rank


def test_normalisation_drops_case_punctuation_and_articles():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("An apple, a day.") == "apple day"
    assert normalize_answer("Theatre") == "theatre"          # 'the' only as a word


def test_exact_match_and_match():
    assert exact_match("The Paris.", ["paris"]) == 1.0
    assert exact_match("Paris, France", ["paris"]) == 0.0
    assert match("It is in Paris, France", ["paris"]) == 1.0   # gold contained
    assert match("It is in Lyon", ["paris", "lyon"]) == 1.0    # any of several golds
    assert match("Parisian food", ["paris"]) == 1.0            # substring, as BERGEN
    assert match("", ["paris"]) == 0.0
    assert match("anything", ["", "!"]) == 0.0                 # golds that normalise to nothing never match


def test_token_f1_takes_the_best_gold():
    # vs "york": precision 1/3, recall 1 -> 0.5; vs "new york": 2/3 and 1 -> 0.8
    assert token_f1("New York City", ["york", "new york"]) == pytest.approx(0.8)
    assert token_f1("", ["paris"]) == 0.0
    assert token_f1("lyon", ["paris"]) == 0.0


def test_rouge_l_is_order_aware():
    # "cat sat on mat" vs "cat on mat": LCS 3, precision 3/4, recall 1
    assert rouge_l("A cat sat on the mat", ["the cat on mat"]) == pytest.approx(2 * 0.75 / 1.75)
    # same bag of words, reversed: LCS 1 of 3, while token F1 is 1
    assert rouge_l("mat on cat", ["cat on mat"]) == pytest.approx(1 / 3)
    assert token_f1("mat on cat", ["cat on mat"]) == pytest.approx(1.0)
    assert rouge_l("", ["cat"]) == 0.0
    assert rouge_l("cat", ["dog", "the cat"]) == 1.0


def test_answer_scores_and_trainer_names():
    assert answer_scores("Paris", ["paris"]) == {"em": 1.0, "f1": 1.0, "rouge_l": 1.0, "match": 1.0}
    rows = [{"answer": "paris"}, {"answers": ["lyon", "marseille"]}]
    scores = score_predictions(["in Paris", "Marseille"], rows)
    assert scores["accuracy"] == 1.0 and scores["exact_match"] == 0.5
    assert scores["f1"] == pytest.approx((2 * 0.5 / 1.5 + 1.0) / 2)


def test_gold_answers_merges_answer_and_answers():
    assert gold_answers({"answer": "a", "answers": ["b", "a"]}) == ["b", "a"]
    assert gold_answers({"answers": ["x"]}) == ["x"]
    assert gold_answers({"query": "q"}) == []


def test_ranking_metrics_by_hand():
    scores, labels = [0.1, 0.9, 0.5], [1, 0, 0]           # model order: 1, 2, 0 -> the relevant one at rank 3
    assert ndcg_at_k(scores, labels) == pytest.approx(1 / math.log2(4))
    assert reciprocal_rank(scores, [x > 0 for x in labels]) == pytest.approx(1 / 3)
    assert ndcg_at_k(scores, [0, 0, 0]) is None
    teacher = [0.2, 0.0, 1.0]                              # gains 0.2, 0, 1; teacher's best (2) at rank 2
    expected = (1 / math.log2(3) + 0.2 / 2) / (1 + 0.2 / math.log2(3))
    rows = [{"relevance": labels, "reranking_scores": teacher}, {"relevance": [0, 0, 0]}]
    out = ranking_metrics([scores, [1.0, 2.0, 3.0]], rows)
    assert out["ndcg@10"] == pytest.approx(1 / math.log2(4))   # the second row has no relevant document: skipped
    assert out["mrr"] == pytest.approx(1 / 3)
    assert out["ndcg@10_teacher"] == pytest.approx(expected)
    assert out["mrr_teacher"] == pytest.approx(0.5)
    assert ranking_metrics([[1.0]], [{}]) == {}


def test_ndcg_cuts_at_k():
    scores = list(range(12, 0, -1))                       # documents ranked in order
    gains = [0] * 11 + [1]                                # the only relevant one is 12th
    assert ndcg_at_k(scores, gains, k=10) == 0.0
