import pytest

from captioning.vocab import SPECIALS, Vocabulary, tokenize


def test_tokenize_lowercases_and_splits_punctuation():
    assert tokenize("A Dog's T-shirt, running!") == ["a", "dog's", "t-shirt", ",", "running", "!"]


def test_build_orders_by_frequency_and_applies_min_freq():
    vocab = Vocabulary.build(["b a a", "c a b"], min_freq=2)
    assert vocab.tokens == [*SPECIALS, "a", "b"]
    assert vocab.encode("a c") == [vocab.bos_id, 4, vocab.unk_id, vocab.eos_id]


def test_encode_decode_round_trip_stops_at_eos():
    vocab = Vocabulary.build(["a red circle on the left"])
    ids = vocab.encode("A red circle on the left")
    assert vocab.decode(ids) == "a red circle on the left"
    assert vocab.decode([*ids[1:3], vocab.eos_id, *ids[3:]]) == "a red"


def test_save_load_round_trip(tmp_path):
    vocab = Vocabulary.build(["x y z", "y"])
    vocab.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json") == vocab
    assert not list(tmp_path.glob("*.tmp"))


def test_rejects_vocabulary_without_specials():
    with pytest.raises(ValueError, match="specials"):
        Vocabulary(["a", "b"])


def test_require_same_accepts_only_the_identical_token_list():
    vocab = Vocabulary.build(["a red circle", "a blue square"])
    vocab.require_same(list(vocab.tokens), "unused")
    vocab.require_same(None, "unused")  # an old checkpoint without a vocabulary: nothing to compare
    with pytest.raises(ValueError, match=r"\(10 tokens\) differs from this model's \(9\): retrain"):
        vocab.require_same([*vocab.tokens, "zebra"], "retrain")
    with pytest.raises(ValueError, match="differs"):
        vocab.require_same(list(reversed(vocab.tokens)), "retrain")
