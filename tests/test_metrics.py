import pytest
from nltk.translate.bleu_score import corpus_bleu

from captioning.metrics import CorpusBLEU, bleu_from_statistics, sentence_statistics

REFS = [
    [["a", "red", "circle", "on", "the", "left"], ["there", "is", "a", "red", "circle", "on", "the", "left"]],
    [["a", "small", "blue", "square", "at", "the", "top"], ["a", "picture", "of", "a", "small", "blue", "square"]],
    [["two", "green", "triangles", "in", "the", "center", "of", "the", "image"]],
]
HYPS = [
    ["a", "red", "circle", "on", "the", "right"],
    ["a", "small", "blue", "square", "at", "the", "top"],
    ["green", "triangles", "in", "the", "center", "of", "the", "picture"],
]


def test_matches_nltk_corpus_bleu():
    scores = bleu_from_statistics([sentence_statistics(h, r) for h, r in zip(HYPS, REFS, strict=True)])
    for order in range(1, 5):
        weights = tuple([1 / order] * order)
        assert scores[f"bleu{order}"] == pytest.approx(corpus_bleu(REFS, HYPS, weights=weights), abs=1e-12)


def test_duplicate_indices_count_once():
    metric = CorpusBLEU()
    metric.update([0, 1, 2], HYPS, REFS)
    metric.update([2], HYPS[2:], REFS[2:])  # what a padded distributed shard repeats
    scores = metric.compute()
    assert scores["count"] == 3
    assert scores["bleu4"] == pytest.approx(corpus_bleu(REFS, HYPS))


def test_perfect_and_empty_hypotheses():
    assert bleu_from_statistics([sentence_statistics(REFS[0][0], REFS[0])])["bleu4"] == pytest.approx(1.0)
    assert bleu_from_statistics([sentence_statistics([], REFS[0])])["bleu1"] == 0.0
