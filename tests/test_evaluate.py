"""`captioning evaluate`: scores per split next to the most-frequent-caption baseline, in any data format,
of a checkpoint or of a captions file."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest
from nltk.translate.bleu_score import corpus_bleu

from captioning import caption_metrics
from captioning.caption import caption
from captioning.evaluate import evaluate
from captioning.vocab import tokenize


@pytest.fixture(autouse=True)
def _without_meteor(monkeypatch):
    """The pure-Python coco metrics: METEOR's JVM would add ~10 s (test_caption_metrics covers Java)."""
    monkeypatch.setattr(caption_metrics, "java_available", lambda: False)


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


@pytest.fixture(scope="module")
def captioned_test_split(tiny_checkpoint, shapes_root, tmp_path_factory):
    """The test split captioned by `captioning caption` (greedy, as evaluate decodes)."""
    output = tmp_path_factory.mktemp("captions") / "captions.jsonl"
    caption(str(tiny_checkpoint), str(shapes_root / "test"), str(output), num_workers=0, progress=False)
    return output


def test_a_captions_file_scores_as_the_checkpoint_does(
    tiny_checkpoint, captioned_test_split, shapes_root, tmp_path, capsys
):
    common = {"root": str(shapes_root), "cache_dir": str(tmp_path / "cache")}
    from_file = evaluate(captions=str(captioned_test_split), **common)
    from_model = evaluate(str(tiny_checkpoint), **common)
    assert from_file == from_model
    assert from_model["test"]["model"]["distinct_captions"] > 1 and from_model["test"]["model"]["cider"] > 0
    assert from_model["test"]["baseline"]["distinct_captions"] == 1
    printed = capsys.readouterr().out
    assert "comparable with papers" in printed and "not comparable with papers" in printed


def test_images_missing_from_the_captions_file_are_reported(captioned_test_split, shapes_root, tmp_path, capsys):
    records = [json.loads(line) for line in captioned_test_split.read_text().splitlines()]
    moved = tmp_path / "moved.jsonl"  # another folder, same file names: matched by name
    moved.write_text(
        "".join(json.dumps(dict(r, image=f"/elsewhere/{r['image'].rsplit('/', 1)[1]}")) + "\n" for r in records[2:])
    )
    results = evaluate(captions=str(moved), root=str(shapes_root), cache_dir=str(tmp_path))
    assert results["test"]["model"]["count"] == len(records) - 2 and results["test"]["model"]["missing"] == 2
    assert f"test: 2 of {len(records)} images have no caption" in capsys.readouterr().out


def test_a_checkpoint_or_a_captions_file_is_required(shapes_root, tmp_path):
    with pytest.raises(ValueError, match="--checkpoint .* or --captions .* exactly one of them"):
        evaluate(root=str(shapes_root))
    with pytest.raises(FileNotFoundError, match="captioning caption --output"):
        evaluate(captions=str(tmp_path / "none.jsonl"), root=str(shapes_root))
