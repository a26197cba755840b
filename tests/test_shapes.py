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
    assert len(a) == 12 + 3 + 3 + 3 + 4  # images + one metadata.jsonl per split


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


def test_an_existing_shapes_set_is_replaced_but_other_files_are_never_deleted(tmp_path):
    tiny = {"train": 2, "validation": 1, "test": 1, "novel": 1, "image_size": 32}
    out = make_shapes(str(tmp_path / "shapes"), seed=0, **tiny)
    make_shapes(str(out), seed=1, **tiny)  # a previous shapes set: replaced
    assert sorted(p.name for p in out.iterdir()) == ["novel", "test", "train", "validation"]
    (tmp_path / "thesis.txt").write_text("precious")
    with pytest.raises(FileExistsError, match=r"holds other files \(shapes, thesis.txt\)"):
        make_shapes(str(tmp_path), seed=0, **tiny)
    assert (tmp_path / "thesis.txt").read_text() == "precious" and (out / "train" / "metadata.jsonl").is_file()
