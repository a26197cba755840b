"""coco-caption metrics: equal to pycocoevalcap's, close to them without Java, and pooled like CorpusBLEU."""

from __future__ import annotations

import logging

import pytest

from captioning import caption_metrics
from captioning.caption_metrics import (
    CocoCaptionMetrics,
    caption_diversity,
    ptb_like_tokenize,
    ptb_tokenize,
    score_captions,
)

HYPS = {
    "dog.jpg": "A brown dog runs on the grass.",
    "kids.jpg": "Two children are playing in the water.",
    "bike.jpg": "A man rides a bike down a hill.",
    "street.jpg": "A man in a red shirt is standing.",
}
REFS = {
    "dog.jpg": [
        "A brown dog is running across the grass.",
        "A dog runs on a lawn.",
        "The brown dog's running outside!",
    ],
    "kids.jpg": [
        "Two kids play in a pool.",
        "Children splash in the water.",
        "Two young children are playing in water",
    ],
    "bike.jpg": [
        "A cyclist rides down a steep hill.",
        "A man on a mountain bike goes downhill.",
        "Someone riding a bicycle (fast).",
    ],
    "street.jpg": [
        "A woman walks down a busy street.",
        "People walking on a city street.",
        "A crowd on the sidewalk, at night.",
    ],
}
# Written down from pycocoevalcap 1.2 itself (PTBTokenizer, Bleu(4), Meteor, Rouge, Cider on HYPS and
# REFS, OpenJDK 17): a change in how our wrapper tokenizes or calls the scorers shows up here.
COCO = {
    "bleu1_coco": 0.7667, "bleu2_coco": 0.5948, "bleu3_coco": 0.4316, "bleu4_coco": 0.2585,
    "meteor": 0.2709, "rougeL": 0.6218, "cider": 1.6377,
}  # fmt: skip
# The pure-Python tokenizer agrees with PTB on this example (and on all 5000 Flickr8k dev captions),
# so the scores are equal; the tolerance allows a rare token split differently on other text.
WITHOUT_JAVA_TOLERANCE = 0.01


@pytest.fixture()
def java() -> None:
    """The coco-caption numbers need Java: without it these tests fail and say so, rather than being skipped."""
    assert caption_metrics.java_available(), "no java on the PATH: apt-get install default-jre-headless"


@pytest.fixture()
def no_java(monkeypatch, tmp_path):
    """A PATH without java (the real lookup runs) and the warning not yet given in this process."""
    monkeypatch.setenv("PATH", str(tmp_path))
    caption_metrics._warn_no_java.cache_clear()
    yield
    caption_metrics._warn_no_java.cache_clear()


@pytest.mark.slow  # METEOR's JVM loads its paraphrase table: ~10 s
@pytest.mark.usefixtures("java")
def test_scores_are_coco_captions():
    scores = score_captions(HYPS, REFS)
    assert {k: round(scores[k], 4) for k in COCO} == COCO
    assert scores["distinct_captions"] == 4 and scores["words_used"] == 22


@pytest.mark.usefixtures("java")
def test_ptb_tokenize_is_pycocoevalcaps_and_the_stand_in_agrees():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    sentences = [
        *HYPS.values(),
        *(r for refs in REFS.values() for r in refs),
        "He can't; it's 5 o'clock in the U.S.",
        "",
    ]
    theirs = PTBTokenizer().tokenize({i: [{"caption": s}] for i, s in enumerate(sentences)})
    ours = ptb_tokenize(sentences)
    assert ours == [theirs[i][0] for i in range(len(sentences))]
    assert [ptb_like_tokenize(s) for s in sentences] == ours


def test_without_java_one_warning_and_close_scores(no_java, caplog):
    with caplog.at_level(logging.WARNING, logger="captioning.caption_metrics"):
        first, second = score_captions(HYPS, REFS), score_captions(HYPS, REFS)
    assert len(caplog.records) == 1 and "\n" not in caplog.records[0].getMessage()
    assert "no java" in caplog.records[0].getMessage()
    assert "meteor" not in first and first == second
    for key in ("bleu1_coco", "bleu2_coco", "bleu3_coco", "bleu4_coco", "rougeL", "cider"):
        assert first[key] == pytest.approx(COCO[key], abs=WITHOUT_JAVA_TOLERANCE), key


def test_stand_in_tokenizer_follows_ptb_on_caption_text():
    assert ptb_like_tokenize("A dog's \"toy\" (red/blue) -- don't!") == "a dog 's toy -lrb- red/blue -rrb- do n't"
    assert ptb_like_tokenize("1,000 kids, 4.5 m; a t-shirt...") == "1,000 kids 4.5 m a t-shirt"


def test_the_same_caption_for_every_photo_is_visible(no_java):
    same = dict.fromkeys(REFS, "a man in a red shirt .")
    scores = score_captions(same, REFS)
    assert scores["distinct_captions"] == 1 and scores["words_used"] == 5  # "a" once
    assert caption_diversity(["a b", "b c", "a b"]) == {"distinct_captions": 2, "words_used": 3}


def test_mismatched_images_are_named(no_java):
    with pytest.raises(ValueError, match="1 images have references but no caption, 0 a caption"):
        score_captions({k: v for k, v in HYPS.items() if k != "dog.jpg"}, REFS)


def test_pooled_by_index_like_corpus_bleu(no_java):
    keys = list(HYPS)
    metric = CocoCaptionMetrics()
    metric.update(range(4), [HYPS[k] for k in keys], [REFS[k] for k in keys])
    metric.update([3], [HYPS[keys[3]]], [REFS[keys[3]]])  # what a padded distributed shard repeats
    assert metric.compute() == score_captions(HYPS, REFS)
    metric.reset()
    assert metric.compute() == {}
