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
