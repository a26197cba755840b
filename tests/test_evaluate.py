"""`captioning evaluate`: BLEU per split next to the most-frequent-caption baseline, in any data format."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest
from nltk.translate.bleu_score import corpus_bleu

from captioning.evaluate import evaluate
from captioning.vocab import tokenize


def _rows(root, split) -> list[dict]:
    return [json.loads(line) for line in (root / split / "metadata.jsonl").read_text().splitlines()]


def test_every_image_of_each_split_is_scored_and_the_baseline_is_nltks_bleu(
    tiny_checkpoint, shapes_root, tmp_path, capsys
):
    results = evaluate(str(tiny_checkpoint), root=str(shapes_root), splits=["test", "novel"], cache_dir=str(tmp_path))
    train = [caption for row in _rows(shapes_root, "train") for caption in row["captions"]]
    most_frequent = tokenize(Counter(" ".join(tokenize(c)) for c in train).most_common(1)[0][0])
    for split in ("test", "novel"):
        references = [[tokenize(c) for c in row["captions"]] for row in _rows(shapes_root, split)]
        assert results[split]["model"]["count"] == results[split]["baseline"]["count"] == len(references)
        expected = corpus_bleu(references, [most_frequent] * len(references))
        assert results[split]["baseline"]["bleu4"] == pytest.approx(expected, abs=1e-9)
    printed = capsys.readouterr().out
    assert "against the most-frequent-caption baseline" in printed and "novel: a few captions" in printed


def test_karpathy_data_with_images_elsewhere(tiny_checkpoint, shapes_root, tmp_path):
    images = tmp_path / "pictures"
    entries = []
    for split, karpathy in (("train", "train"), ("test", "test")):
        shutil.copytree(shapes_root / split, images / split)
        for line in (shapes_root / split / "metadata.jsonl").read_text().splitlines():
            row = json.loads(line)
            sentences = [{"raw": c} for c in row["captions"]]
            entries.append({"filepath": split, "filename": row["file_name"], "split": karpathy, "sentences": sentences})
    annotations = tmp_path / "karpathy"
    annotations.mkdir()
    (annotations / "dataset_coco.json").write_text(json.dumps({"images": entries}))
    results = evaluate(
        str(tiny_checkpoint), root=str(annotations), image_root=str(images), cache_dir=str(tmp_path / "c")
    )
    assert results["test"]["model"]["count"] == len(_rows(shapes_root, "test"))
    with pytest.raises(ValueError, match="karpathy data sets have the splits train, validation, test"):
        evaluate(str(tiny_checkpoint), root=str(annotations), image_root=str(images), splits=["novel"])
