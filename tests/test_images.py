"""Robust image reading: modes, EXIF orientation, reduced JPEG decoding, bad files, listing inputs."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from captioning.data.images import (
    ImageFolder,
    collate_images,
    list_images,
    load_rgb,
    pixel_limit,
    to_rgb,
)

ORANGE = (230, 120, 30)


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


# --- modes --------------------------------------------------------------------------------------


def _grey16(value: int, mode: str = "I;16", size: tuple[int, int] = (6, 4)) -> Image.Image:
    return Image.new(mode, size, value)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.new("RGB", (6, 4), ORANGE), ORANGE),
        (Image.new("L", (6, 4), 77), (77, 77, 77)),
        (Image.new("1", (6, 4), 1), (255, 255, 255)),
        (Image.new("RGB", (6, 4), ORANGE).convert("P", palette=Image.Palette.ADAPTIVE), ORANGE),
        (Image.new("RGB", (6, 4), ORANGE).convert("CMYK"), ORANGE),
        (Image.new("RGB", (6, 4), ORANGE).convert("YCbCr"), ORANGE),
        (Image.new("RGB", (6, 4), ORANGE).convert("HSV"), ORANGE),
        (Image.new("RGBA", (6, 4), (*ORANGE, 255)), ORANGE),
        (Image.new("RGBA", (6, 4), (*ORANGE, 0)), (255, 255, 255)),  # transparent -> white
        (Image.new("LA", (6, 4), (50, 0)), (255, 255, 255)),
        (Image.new("LA", (6, 4), (50, 255)), (50, 50, 50)),
        (_grey16(65535), (255, 255, 255)),
        (_grey16(32896), (128, 128, 128)),  # half of 16-bit range -> half of 8-bit, not clipped white
        (_grey16(32896, "I;16B"), (128, 128, 128)),
        (Image.new("I", (6, 4), 32896), (128, 128, 128)),  # 16-bit data in a 32-bit image
        (Image.new("I", (6, 4), 77), (77, 77, 77)),  # 8-bit data in a 32-bit image
        (Image.new("F", (6, 4), 0.5), (128, 128, 128)),  # 0-1 floats
    ],
    ids=[
        "RGB",
        "L",
        "1",
        "P",
        "CMYK",
        "YCbCr",
        "HSV",
        "RGBA",
        "RGBA-clear",
        "LA-clear",
        "LA",
        "I;16-max",
        "I;16",
        "I;16B",
        "I-16bit",
        "I-8bit",
        "F",
    ],  # fmt: skip
)
def test_every_mode_becomes_rgb_with_the_right_colour(image, expected):
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == image.size
    assert np.abs(np.asarray(rgb)[0, 0].astype(int) - expected).max() <= 3, (np.asarray(rgb)[0, 0], expected)


def test_palette_with_transparency_is_composited_on_white():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([10, 20, 30] + [0] * 765)
    image.info["transparency"] = 0
    assert to_rgb(image).getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize(
    ("mode", "fmt", "fill", "expected"),
    [
        ("CMYK", "JPEG", Image.new("RGB", (16, 16), ORANGE).convert("CMYK"), ORANGE),
        ("I;16", "PNG", _grey16(32896, size=(16, 16)), (128, 128, 128)),
        ("RGBA", "PNG", Image.new("RGBA", (16, 16), (*ORANGE, 0)), (255, 255, 255)),
        ("LA", "PNG", Image.new("LA", (16, 16), (40, 255)), (40, 40, 40)),
        ("P", "GIF", Image.new("RGB", (16, 16), ORANGE).convert("P", palette=Image.Palette.ADAPTIVE), ORANGE),
        ("RGB", "WEBP", Image.new("RGB", (16, 16), ORANGE), ORANGE),
        ("RGB", "BMP", Image.new("RGB", (16, 16), ORANGE), ORANGE),
        ("RGB", "TIFF", Image.new("RGB", (16, 16), ORANGE), ORANGE),
    ],
)
def test_files_of_every_format_and_mode_load_as_rgb(mode, fmt, fill, expected):
    data = _encode(fill, fmt)
    assert Image.open(io.BytesIO(data)).mode.startswith(mode[:1])  # the file really has that mode
    rgb = load_rgb(data)
    assert rgb.mode == "RGB"
    assert np.abs(np.asarray(rgb)[8, 8].astype(int) - expected).max() <= 8


# --- EXIF orientation and reduced decoding ------------------------------------------------------


def _marked(width: int = 60, height: int = 40) -> Image.Image:
    """Black picture, wider than tall, with a red block in its top-left corner."""
    image = Image.new("RGB", (width, height))
    image.paste((255, 0, 0), (0, 0, width // 4, height // 4))
    return image


@pytest.mark.parametrize(
    ("orientation", "size", "red_corner"),
    [(1, (60, 40), (0, 0)), (3, (60, 40), (59, 39)), (6, (40, 60), (39, 0)), (8, (40, 60), (0, 59))],
)
def test_exif_orientation_is_applied(orientation, size, red_corner):
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation tag
    rgb = load_rgb(_encode(_marked(), "JPEG", exif=exif, quality=95))
    assert rgb.size == size
    r, g, b = rgb.getpixel(red_corner)
    assert r > 200 and g < 60 and b < 60  # the marker sits where a viewer shows it


def test_jpegs_are_decoded_at_reduced_size_but_never_below_the_target():
    data = _encode(_marked(640, 480), "JPEG")
    assert load_rgb(data).size == (640, 480)
    assert load_rgb(data, target_size=224).size == (320, 240)  # 1/2 scale still covers 224
    assert load_rgb(data, target_size=100).size == (160, 120)  # 1/4 scale


# --- bad files ------------------------------------------------------------------------------------


def test_pixel_limit_refuses_bombs_before_decoding_and_restores_pillow():
    data = _encode(Image.new("RGB", (200, 100)), "PNG")
    with pytest.raises(Image.DecompressionBombError, match="20000 pixels"):
        load_rgb(data, max_pixels=19_999)
    assert load_rgb(data, max_pixels=20_000).size == (200, 100)
    assert load_rgb(data, max_pixels=None).size == (200, 100)
    saved = Image.MAX_IMAGE_PIXELS
    with pixel_limit(10):
        assert Image.MAX_IMAGE_PIXELS == 10
    assert saved == Image.MAX_IMAGE_PIXELS


def _identity(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image.resize((8, 8)))).permute(2, 0, 1)


def plant_bad_files(folder: Path, good: bytes) -> dict[str, str]:
    """Write one file of each unreadable kind; returns {file name: a word its reason must contain}."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    (folder / "zero.jpg").write_bytes(b"")
    expected["zero.jpg"] = "empty"
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    expected["truncated.png"] = "truncated"
    (folder / "not_an_image.png").write_text("this is text, not pixels\n")
    expected["not_an_image.png"] = "not an image"
    (folder / "bomb.png").write_bytes(_encode(Image.new("L", (400, 400)), "PNG"))  # over max_pixels=100_000
    expected["bomb.png"] = "DecompressionBomb"
    os.symlink(folder / "gone.png", folder / "dangling_link.png")  # the file behind it was deleted
    expected["dangling_link.png"] = "No such file"
    os.mkfifo(folder / "fifo.jpg")  # reading would block forever: refused as not a regular file
    expected["fifo.jpg"] = "not a regular file"
    if os.geteuid() != 0:  # root reads mode-000 files; see test_unreadable_file_is_reported_not_raised
        (folder / "no_permission.png").write_bytes(good)
        (folder / "no_permission.png").chmod(0)
        expected["no_permission.png"] = "Permission denied"
    return expected


def test_image_folder_turns_every_bad_file_into_a_reason(tmp_path):
    good = _encode(Image.new("RGB", (32, 32), ORANGE), "PNG")
    expected = plant_bad_files(tmp_path, good)
    (tmp_path / "good.png").write_bytes(good)
    paths = list_images(tmp_path)
    assert len(paths) == len(expected) + 1
    dataset = ImageFolder(paths, _identity, max_pixels=100_000)
    batch = collate_images([dataset[i] for i in range(len(dataset))])
    assert batch["paths"] == [str(tmp_path / "good.png")]
    assert batch["images"].shape == (1, 3, 8, 8)
    reasons = {Path(path).name: reason for path, reason in batch["errors"]}
    assert reasons.keys() == expected.keys()
    for name, word in expected.items():
        assert word.lower() in reasons[name].lower(), (name, reasons[name])


def test_a_batch_of_only_bad_files_collates_to_no_images(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    batch = collate_images([ImageFolder([str(tmp_path / "a.jpg")], _identity)[0]])
    assert batch["images"] is None and batch["paths"] == [] and len(batch["errors"]) == 1


def test_unreadable_file_is_reported_not_raised():
    """A mode-000 file is read in a subprocess, by an unprivileged user: as root every file is
    readable, so there the subprocess first drops to `nobody` (uid 65534)."""
    drop_privileges = "os.setgid(65534); os.setuid(65534)" if os.geteuid() == 0 else ""
    with tempfile.TemporaryDirectory() as name:  # under /tmp, not pytest's root-only folder
        folder = Path(name)
        folder.chmod(0o755)
        (folder / "locked.png").write_bytes(_encode(Image.new("RGB", (8, 8)), "PNG"))
        (folder / "locked.png").chmod(0)
        script = textwrap.dedent(f"""
            import json, os
            from PIL import Image
            from captioning.data.images import ImageFolder
            Image.init()  # import every plugin while the interpreter's files are still readable
            {drop_privileges}
            item = ImageFolder([{str(folder / "locked.png")!r}], transform=None)[0]
            print(json.dumps(item["error"]))
        """)
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Permission denied" in json.loads(result.stdout.strip().splitlines()[-1])


# --- listing inputs -------------------------------------------------------------------------------


def test_list_images_from_folder_glob_and_list_file(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ["b.JPG", "a.png", "notes.txt", "sub/c.webp", "sub/d.tiff"]:
        (tmp_path / name).write_bytes(b"x")
    top = [str(tmp_path / "a.png"), str(tmp_path / "b.JPG")]
    assert list_images(tmp_path) == top
    assert list_images(tmp_path, recursive=True) == [*top, str(tmp_path / "sub/c.webp"), str(tmp_path / "sub/d.tiff")]
    assert list_images(str(tmp_path / "*.png")) == [str(tmp_path / "a.png")]
    (tmp_path / "sub" / "deeper").mkdir()
    (tmp_path / "sub" / "deeper" / "e.png").write_bytes(b"x")
    # ** means any depth, the top folder included, with or without --recursive
    assert list_images(str(tmp_path / "**" / "*.png")) == [str(tmp_path / "a.png"), str(tmp_path / "sub/deeper/e.png")]
    (tmp_path / "sub" / "back").symlink_to(tmp_path)  # a link to a folder above: ** finds each file once
    assert list_images(str(tmp_path / "**" / "*.png")) == [str(tmp_path / "a.png"), str(tmp_path / "sub/deeper/e.png")]
    (tmp_path / "loop.jpg").symlink_to(tmp_path / "loop.jpg")  # a symlink loop is listed, to fail when read
    assert str(tmp_path / "loop.jpg") in list_images(tmp_path)
    listing = tmp_path / "list.txt"
    listing.write_text(f"# my photos\nsub/d.tiff\n\n{tmp_path / 'a.png'}\nsub/d.tiff\n")
    assert list_images(listing) == [str(tmp_path / "sub/d.tiff"), str(tmp_path / "a.png")]
    with pytest.raises(FileNotFoundError, match="--input"):
        list_images(tmp_path / "missing")
