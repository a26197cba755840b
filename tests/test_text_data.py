"""LanguageModelDataModule: sources, spans, vocabulary from training text only, contiguous streams."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from captioning.data.text import (
    IGNORE_INDEX,
    LanguageModelDataModule,
    default_corpus,
    detokenize,
    read_hf,
    stream_layout,
    word_tokens,
)
from captioning.vocab import BOS, EOS, Vocabulary

pytestmark = pytest.mark.usefixtures("one_thread")

WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "and",
    "then",
    "it",
    "ran",
    "off",
    "to",
    "see",
    "dog",
    "yard",
]


def make_text(lines: int = 120, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "".join(
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))).capitalize() + ".\n" for _ in range(lines)
    )


@pytest.fixture()
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(make_text())
    return path


def decode_chars(ids: torch.Tensor, vocab: Vocabulary) -> str:
    return "".join(vocab.tokens[i] for i in ids.tolist())


# --- stream layout ---------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "streams"), [(20, 4), (21, 4), (7, 3), (5, 8), (100, 1)])
def test_stream_layout_is_contiguous_and_covers_every_pair_once(n: int, streams: int) -> None:
    ids = torch.arange(10, 10 + n)
    inputs, targets, chars = stream_layout(ids, ids.clone(), torch.ones(n), streams)
    assert inputs.shape == targets.shape == chars.shape and inputs.size(0) == streams
    real = targets != IGNORE_INDEX
    # Read row after row, the real pairs are exactly (t_i, t_{i+1}) for i = 0..n-2, in order.
    assert inputs[real].tolist() == ids[:-1].tolist()
    assert targets[real].tolist() == ids[1:].tolist()
    assert chars.sum().item() == n - 1
    # Padding only at the very end: once a row is padding, everything after it is too.
    flat = real.flatten().int()
    assert flat.tolist() == sorted(flat.tolist(), reverse=True)
    # Within a row, every target is the next input: the streams are contiguous text.
    for row_in, row_t, row_real in zip(inputs, targets, real, strict=True):
        k = int(row_real.sum())
        assert row_t[: k - 1].tolist() == row_in[1:k].tolist()


def test_train_chunks_are_contiguous_streams_that_cover_the_training_span(text_file: Path) -> None:
    data = LanguageModelDataModule(files=[str(text_file)], batch_size=3, bptt=7, val_fraction=0.1, test_fraction=0.1)
    data.setup("fit")
    chunks = list(data.train_dataloader())
    assert len(chunks) == len(data.train_dataloader()) > 1
    assert all(c["inputs"].shape[0] == 3 and c["inputs"].shape[1] <= 7 for c in chunks)
    inputs = torch.cat([c["inputs"] for c in chunks], dim=1)  # (S, L): chunk k+1 continues chunk k
    targets = torch.cat([c["targets"] for c in chunks], dim=1)
    real = targets != IGNORE_INDEX
    text = text_file.read_text()
    train = data.spans()["train"][0]
    assert train == text[: len(train)] and len(train) == len(text) - 2 * round(0.1 * len(text))
    assert decode_chars(inputs[real], data.vocabulary) == train[:-1]
    assert decode_chars(targets[real], data.vocabulary) == train[1:]
    assert sum(float(c["chars"]) for c in chunks) == len(train) - 1
    # A second pass (next epoch) gives the same chunks in the same order.
    again = list(data.train_dataloader())
    assert all(torch.equal(a["inputs"], b["inputs"]) for a, b in zip(chunks, again, strict=True))


def test_validation_predicts_every_token_of_its_span(text_file: Path) -> None:
    data = LanguageModelDataModule(files=[str(text_file)], eval_batch_size=4, val_fraction=0.2, test_fraction=0.1)
    text = text_file.read_text()
    n_val, n_test = round(0.2 * len(text)), round(0.1 * len(text))
    n_train = len(text) - n_val - n_test
    for split, span in (
        ("validation", text[n_train : n_train + n_val]),
        ("test", text[n_train + n_val :]),
    ):
        _, targets, chars = data.streams(split)
        assert decode_chars(targets[targets != IGNORE_INDEX], data.vocabulary) == span
        assert chars.sum().item() == len(span)


def test_streams_are_divided_among_processes(text_file: Path) -> None:
    data = LanguageModelDataModule(files=[str(text_file)], batch_size=4, eval_batch_size=2)
    whole = data.streams("train")
    parts = [data.streams("train", rank, 2) for rank in range(2)]
    # inputs, targets, chars: rank 0 has rows 0-1, rank 1 rows 2-3, nothing shared
    for i in range(3):
        assert torch.equal(torch.cat([parts[0][i], parts[1][i]]), whole[i])
    assert parts[0][0].shape[1] == parts[1][0].shape[1]  # same number of chunks on every process
    with pytest.raises(ValueError, match="batch_size .* divisible"):
        data.streams("train", 0, 3)
    with pytest.raises(ValueError, match="eval_batch_size .* divisible"):
        data.streams("validation", 0, 4)


# --- vocabulary and tokens ---------------------------------------------------------------------


def test_vocabulary_comes_from_the_training_span_only(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    # x, y, z and Q only occur after the training span
    path.write_text("ab" * 500 + "xyz" * 50 + "Q" * 50 + "\n")
    data = LanguageModelDataModule(files=[str(path)], val_fraction=0.1, test_fraction=0.1)
    assert data.vocab_tokens == ["<pad>", "<bos>", "<eos>", "<unk>", "a", "b"]
    _, targets, _ = data.streams("validation")
    assert (targets[targets != IGNORE_INDEX] == Vocabulary.unk_id).any()


def test_word_level_tokens_weights_and_vocabulary(text_file: Path) -> None:
    tokens, chars = word_tokens("The cat, sat.\n\nOn  it\n")
    assert tokens == [BOS, "the", "cat", ",", "sat", ".", EOS, BOS, EOS, BOS, "on", "it", EOS]
    assert sum(chars) == len("The cat, sat.\n\nOn  it\n")  # every character counted once
    assert chars[tokens.index(BOS)] == 0.0  # <bos> is given, not predicted
    assert detokenize(tokens, "word") == "the cat , sat .\n\non it\n"

    data = LanguageModelDataModule(files=[str(text_file)], level="word", min_freq=2, batch_size=2)
    train_tokens = data.spans()["train"][0]
    assert data.vocab_tokens[4:] == sorted(
        {t for t in train_tokens if train_tokens.count(t) >= 2 and t not in (BOS, EOS)},
        key=lambda t: (-train_tokens.count(t), t),
    )
    _, targets, _ = data.streams("train")
    assert not (targets == Vocabulary.bos_id).any()  # <bos> never a target


# --- sources -------------------------------------------------------------------------------------


def test_default_corpus_is_python_help_text() -> None:
    text = default_corpus()
    assert len(text) > 100_000 and "lambda" in text and text == default_corpus()
    data = LanguageModelDataModule(max_chars=5000)
    assert len(data.spans()["train"][0]) == 4500


def test_files_and_globs_in_order(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first\n")
    data = LanguageModelDataModule(files=[str(tmp_path / "*.txt")], val_fraction=0.0, test_fraction=0.0)
    assert data.spans()["train"][0] == "first\nsecond\n"
    with pytest.raises(FileNotFoundError, match="matches no file"):
        LanguageModelDataModule(files=[str(tmp_path / "nope*.txt")]).spans()
    (tmp_path / "latin1.txt").write_bytes("Café crème\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt is not UTF-8 \(byte 3: b'\\xe9'\); convert it, e.g. `iconv"):
        LanguageModelDataModule(files=[str(tmp_path / "latin1.txt")]).spans()
    (tmp_path / "bom.txt").write_bytes("\ufeffhello\n".encode())  # a BOM is not text
    assert (
        LanguageModelDataModule(files=[str(tmp_path / "bom.txt")], val_fraction=0.0, test_fraction=0.0).spans()[
            "train"
        ][0]
        == "hello\n"
    )


def test_hugging_face_dataset_from_a_local_folder(tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    folder.mkdir()
    rows = [{"body": f"line {i}\n", "other": i} for i in range(5)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_hf(str(folder), None, "train", "body") == "".join(r["body"] for r in rows)
    with pytest.raises(ValueError, match="text_column"):
        read_hf(str(folder), None, "train", "text")


def test_caption_text_gives_the_caption_vocabulary(shapes_root: Path) -> None:
    from captioning.data.captions import CaptionDataModule

    data = LanguageModelDataModule(caption_root=str(shapes_root), level="word", batch_size=4)
    assert data.vocab_tokens == CaptionDataModule(root=str(shapes_root)).vocab_tokens
    tokens = data.spans()["train"][0]
    assert tokens[0] == BOS and tokens[-1] == EOS


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="at most one text source"):
        LanguageModelDataModule(files=["a.txt"], hf_dataset="wikitext")
    with pytest.raises(ValueError, match="data.level"):
        LanguageModelDataModule(level="byte")
    with pytest.raises(ValueError, match="val_fraction"):
        LanguageModelDataModule(val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ValueError, match="data.bptt"):
        LanguageModelDataModule(bptt=0)
    with pytest.raises(ValueError, match="test span of the corpus is empty: raise data.test_fraction"):
        LanguageModelDataModule(max_chars=2000, test_fraction=0.0).streams("test")
