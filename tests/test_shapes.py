import hashlib
import json

import pytest

from captioning.data.shapes import COLORS, HELD_OUT, SHAPES, make_shapes


def _digest(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_byte_identical_files(tmp_path):
    sizes = {"train": 12, "validation": 3, "test": 3, "novel": 3, "image_size": 48}
    a = _digest(make_shapes(str(tmp_path / "a"), seed=3, **sizes))
    b = _digest(make_shapes(str(tmp_path / "b"), seed=3, **sizes))
    c = _digest(make_shapes(str(tmp_path / "c"), seed=4, **sizes))
    assert a == b
    assert a != c
    assert len(a) == 12 + 3 + 3 + 3 + 4 + 1  # images + one metadata.jsonl per split + shapes.json


def _pairs(caption):
    words = caption.split()
    return {(w, n) for w, n in zip(words, words[1:], strict=False) if w in COLORS and n in SHAPES}


def test_layout_captions_and_novel_split(shapes_root):
    for split in ("train", "validation", "test", "novel"):
        rows = [json.loads(line) for line in (shapes_root / split / "metadata.jsonl").read_text().splitlines()]
        assert rows, split
        for row in rows:
            assert (shapes_root / split / row["file_name"]).is_file()
            assert len(set(row["captions"])) >= 3
            seen = _pairs(row["captions"][0])
            assert 1 <= len(seen) <= 3
            if split == "novel":
                assert seen & HELD_OUT, row
            else:
                assert not seen & HELD_OUT, row


def test_an_existing_shapes_set_is_replaced_but_other_folders_are_never_deleted(tmp_path):
    tiny = {"train": 2, "validation": 1, "test": 1, "novel": 1, "image_size": 32}
    out = make_shapes(str(tmp_path / "shapes"), seed=0, **tiny)
    make_shapes(str(out), seed=1, **tiny)  # made by make-shapes: replaced
    assert sorted(p.name for p in out.iterdir()) == ["novel", "shapes.json", "test", "train", "validation"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]  # no staging folder left behind
    # A user's own imagefolder data set has the same layout: it must survive.
    own = tmp_path / "mine"
    (own / "train").mkdir(parents=True)
    (own / "train" / "holiday.jpg").write_bytes(b"precious")
    (own / "train" / "metadata.jsonl").write_text('{"file_name": "holiday.jpg", "captions": ["a beach"]}\n')
    with pytest.raises(FileExistsError, match="not made by `captioning make-shapes`"):
        make_shapes(str(own), seed=0, **tiny)
    assert (own / "train" / "holiday.jpg").read_bytes() == b"precious"
    make_shapes(str(tmp_path / "empty"), seed=0, **tiny)  # a new folder is fine
