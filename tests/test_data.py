import csv
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from captioning.data.captions import CaptionDataModule, load_split
from captioning.data.features import ImageFiles, load_or_compute
from captioning.lit.captioner import CaptioningModule


def _rows(root, split):
    return [json.loads(line) for line in (root / split / "metadata.jsonl").read_text().splitlines()]


def test_imagefolder_training_pairs_and_evaluation_images(tiny_data_kwargs, shapes_root):
    data = CaptionDataModule(**tiny_data_kwargs)
    data.setup("fit")
    train_rows = _rows(shapes_root, "train")
    assert len(data.train_dataloader().dataset) == sum(len(r["captions"]) for r in train_rows)
    val = data.val_dataloader().dataset
    assert len(val) == len(_rows(shapes_root, "validation"))
    batch = next(iter(data.train_dataloader()))
    assert batch["inputs"].shape == (32, 1280 * 4)  # cached features, not pixels
    tokens, lengths = batch["tokens"], batch["lengths"]
    assert (tokens[:, 0] == data.vocabulary.bos_id).all()
    for row, n in zip(tokens, lengths, strict=True):
        assert row[n - 1] == data.vocabulary.eos_id and (row[n:] == data.vocabulary.pad_id).all()
    eval_batch = next(iter(data.val_dataloader()))
    assert len(eval_batch["references"][0]) == len(_rows(shapes_root, "validation")[0]["captions"])


def test_vocabulary_comes_from_the_training_split_only(tiny_data_kwargs, shapes_root, tmp_path):
    root = tmp_path / "shapes"
    shutil.copytree(shapes_root, root)
    rows = _rows(root, "test")
    rows[0]["captions"].append("zebra")
    (root / "test" / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    data = CaptionDataModule(**{**tiny_data_kwargs, "root": str(root)})
    assert "zebra" not in data.vocab_tokens and "circle" in data.vocab_tokens


def test_fine_tuning_reads_pixels(tiny_data_kwargs):
    data = CaptionDataModule(**{**tiny_data_kwargs, "cache_features": False})
    data.setup("fit")
    assert next(iter(data.train_dataloader()))["inputs"].shape == (32, 3, 64, 64)


def test_karpathy_json_format(shapes_root, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    entries = []
    for split, kind in (("train", "train"), ("validation", "val"), ("test", "test"), ("train", "restval")):
        for row in _rows(shapes_root, split)[:3]:
            name = f"{kind}-{row['file_name']}"
            shutil.copy(shapes_root / split / row["file_name"], images / name)
            entries.append(
                {"filename": name, "split": kind, "sentences": [{"raw": c.upper()} for c in row["captions"]]}
            )
    (tmp_path / "dataset_flickr8k.json").write_text(json.dumps({"images": entries}))
    train = load_split(tmp_path, "train")
    assert len(train) == 6  # restval counts as training
    assert train[0]["image"]["path"].endswith("train-00000.png")
    assert len(load_split(tmp_path, "validation")) == 3


def test_flickr8k_captions_csv_format(shapes_root, tmp_path):
    (tmp_path / "Images").mkdir()
    with (tmp_path / "captions.txt").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        for row in _rows(shapes_root, "train")[:40]:
            shutil.copy(shapes_root / "train" / row["file_name"], tmp_path / "Images" / row["file_name"])
            for caption in row["captions"]:
                writer.writerow([row["file_name"], caption + ", with a comma"])
    splits = {s: load_split(tmp_path, s) for s in ("train", "validation", "test")}
    names = [set(t["image"][i]["path"] for i in range(len(t))) for t in splits.values()]
    assert sum(len(n) for n in names) == 40 and not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert splits["train"][0]["captions"][0].endswith(", with a comma")
    assert len(splits["train"][0]["captions"]) == 4


def test_flickr8k_token_file_reads_like_the_csv(shapes_root, tmp_path):
    (tmp_path / "Images").mkdir()
    rows = _rows(shapes_root, "train")[:16]
    lines = []
    for row in rows:
        shutil.copy(shapes_root / "train" / row["file_name"], tmp_path / "Images" / row["file_name"])
        lines += [f"{row['file_name']}#{n}\t{caption}" for n, caption in enumerate(row["captions"])]
    (tmp_path / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    tables = [load_split(tmp_path, split) for split in ("train", "validation", "test")]
    by_name = {Path(t["image"][i]["path"]).name: t["captions"][i] for t in tables for i in range(len(t))}
    assert by_name == {row["file_name"]: row["captions"] for row in rows}


def test_flickr8k_csv_header_may_be_capitalised_spaced_or_start_with_a_bom(shapes_root, tmp_path):
    (tmp_path / "Images").mkdir()
    rows = _rows(shapes_root, "train")[:8]
    body = "".join(f"{row['file_name']},{row['captions'][0]}\n" for row in rows)
    (tmp_path / "captions.txt").write_text("\ufeffImage, Caption\n" + body, encoding="utf-8")
    tables = [load_split(tmp_path, split) for split in ("train", "validation", "test")]
    assert sum(len(t) for t in tables) == 8
    (tmp_path / "captions.txt").write_text("image,caption\n" + body + "lonely.jpg,\n")
    with pytest.raises(ValueError, match="line 10 of .*captions.txt needs an image name and a caption"):
        load_split(tmp_path, "train")


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ('{"file_name": "a.png", "captions": "a red circle"}', "line 2 of .*metadata.jsonl"),  # a string, not a list
        ('{"file_name": "a.png"}', "line 2 of .*metadata.jsonl"),
        ('{"file_name": "a.png", captions: []}', "line 2 of .*metadata.jsonl is not JSON"),
        ('{"file_name": "nowhere.png", "captions": ["a"]}', "missing, e.g. .*nowhere.png: fix their file_name"),
    ],
)
def test_malformed_metadata_names_the_line_and_the_fix(shapes_root, tmp_path, line, error):
    split = tmp_path / "train"
    shutil.copytree(shapes_root / "train", split)
    first = (split / "metadata.jsonl").read_text().splitlines()[0]
    (split / "metadata.jsonl").write_text(f"{first}\n{line}\n")
    with pytest.raises((ValueError, FileNotFoundError), match=error):
        CaptionDataModule(root=str(tmp_path), cache_dir=str(tmp_path / "cache")).image_sources("train")


def test_wrong_image_root_or_caption_file_says_what_to_fix(shapes_root, tmp_path):
    (tmp_path / "captions.txt").write_text(
        "image,caption\n" + "".join(f"{r['file_name']},a caption\n" for r in _rows(shapes_root, "train"))
    )
    # Captions alone (a vocabulary, a language model on the captions) need no image files ...
    assert len(load_split(tmp_path, "train")) > 0
    # ... but the splits whose pixels are read do.
    with pytest.raises(FileNotFoundError, match=r"images of split 'train' are missing, e.g. .*: check data.image_root"):
        CaptionDataModule(root=str(tmp_path), cache_dir=str(tmp_path / "cache")).image_sources("train")
    (tmp_path / "captions.txt").write_text("train-00000.png a caption without a separator\n")
    with pytest.raises(ValueError, match="captions.txt is neither CSV"):
        load_split(tmp_path, "train")
    (tmp_path / "captions.txt").unlink()
    (tmp_path / "dataset_flickr8k.json").write_text('{"images": [{"filename": "a.png"}]}')
    with pytest.raises(ValueError, match="dataset_flickr8k.json is not a Karpathy split file"):
        load_split(tmp_path, "train")


def test_missing_data_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="captioning make-shapes"):
        _ = CaptionDataModule(root=str(tmp_path)).vocabulary


def test_feature_cache_is_reused_and_invalidated_by_image_size(shapes_root, tmp_path):
    sources = [str(p) for p in sorted((shapes_root / "test").glob("*.png"))][:4]
    args = {"backbone": "mobilenet_v2", "pretrained": True, "spatial_grid": 1, "num_workers": 0}
    first = load_or_compute(tmp_path, "t", sources, image_size=64, **args)
    files = list(tmp_path.glob("*.pt"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    again = load_or_compute(tmp_path, "t", sources, image_size=64, compute=False, **args)
    assert torch.equal(first, again) and files[0].stat().st_mtime_ns == mtime
    assert load_or_compute(tmp_path, "t", sources, image_size=96, compute=False, **args) is None
    bigger = load_or_compute(tmp_path, "t", sources, image_size=96, **args)
    assert len(list(tmp_path.glob("*.pt"))) == 2 and not torch.equal(first, bigger)


def test_cached_random_encoder_features_are_the_models_own(shapes_root, tmp_path, tiny_model_kwargs):
    """With pretrained=False the decoder trains on cached features: they must be those of the encoder
    the model (and so the checkpoint) holds, whatever the global random state was. (resnet18: a
    random MobileNetV2's features are all ~1e-9, too small to tell two networks apart.)"""
    sources = [str(p) for p in sorted((shapes_root / "test").glob("*.png"))][:3]
    torch.manual_seed(1)
    cached = load_or_compute(tmp_path, "t", sources, "resnet18", False, 64, 2, num_workers=0).float()
    torch.manual_seed(2)
    model = CaptioningModule(
        vocab_tokens=["<pad>", "<bos>", "<eos>", "<unk>"], backbone="resnet18", pretrained=False, **tiny_model_kwargs
    )
    images = torch.stack([ImageFiles(sources, "resnet18", 64)[i] for i in range(len(sources))])
    with torch.no_grad():
        features = model.eval().features(images)
    assert cached.abs().mean() > 0.1
    torch.testing.assert_close(features.half().float(), cached, rtol=1e-2, atol=1e-2)


def test_test_stage_reads_only_the_test_split(tiny_data_kwargs, tmp_path):
    data = CaptionDataModule(**{**tiny_data_kwargs, "cache_dir": str(tmp_path), "test_split": "novel"})
    data.setup("test")
    assert [p.name.split("-")[1] for p in tmp_path.glob("*.pt")] == ["novel"]
    assert len(data.test_dataloader().dataset) > 0


def test_unreadable_training_image_names_the_file(shapes_root, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png"):
        load_or_compute(tmp_path, "t", [str(bad)], "mobilenet_v2", True, 64, 1, num_workers=0)


def test_feature_cache_key_sees_a_rewrite_that_kept_size_and_modification_time(tmp_path):
    from captioning.data.features import cache_key

    image = tmp_path / "a.png"
    image.write_bytes(b"first content")
    before = image.stat()
    key = cache_key([str(image)], "mobilenet_v2", True, 64, 1)
    image.write_bytes(b"other content")  # same size
    os.utime(image, ns=(before.st_atime_ns, before.st_mtime_ns))  # as cp -p / rsync --times leave it
    assert image.stat().st_size == before.st_size and image.stat().st_mtime_ns == before.st_mtime_ns
    assert cache_key([str(image)], "mobilenet_v2", True, 64, 1) != key


def test_building_the_feature_cache_leaves_the_random_stream_alone(shapes_root, tmp_path):
    sources = sorted(str(p) for p in (shapes_root / "novel").glob("*.png"))[:4]
    torch.manual_seed(0)
    load_or_compute(tmp_path, "novel", sources, "mobilenet_v2", True, 64, 1, num_workers=0)  # cold
    after_cold = torch.rand(3)
    torch.manual_seed(0)
    load_or_compute(tmp_path, "novel", sources, "mobilenet_v2", True, 64, 1, num_workers=0)  # warm
    assert torch.equal(torch.rand(3), after_cold)
