"""The Python API: paths, PIL images and tensors of the same picture get the same caption."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from captioning.inference import Captioner


@pytest.fixture(scope="module")
def captioner(tiny_checkpoint) -> Captioner:
    return Captioner.from_checkpoint(tiny_checkpoint)


@pytest.fixture(scope="module")
def pictures(shapes_root) -> list[Path]:
    return sorted((shapes_root / "test").glob("*.png"))[:6]


def test_path_pil_and_tensor_inputs_give_the_same_captions(captioner, pictures):
    from_paths = captioner.caption(pictures)
    assert len(from_paths) == len(pictures) and all(isinstance(c, str) and c for c in from_paths)
    assert len(set(from_paths)) > 1  # the model looks at the images
    pil = [Image.open(p) for p in pictures]
    assert captioner.caption(pil) == from_paths
    uint8 = [pil_to_tensor(image.convert("RGB")) for image in pil]  # (3, H, W) 0-255
    assert captioner.caption(uint8) == from_paths
    assert captioner.caption([t.float() / 255 for t in uint8]) == from_paths  # (3, H, W) 0-1
    assert captioner.caption(torch.stack(uint8)) == from_paths  # (B, 3, H, W)
    assert captioner.caption([str(p) for p in pictures], batch_size=4) == from_paths  # batching changes nothing
    assert captioner.caption(pictures[0]) == from_paths[0]  # one image in, one string out


def test_input_modes_and_orientation_are_normalised(captioner, pictures, tmp_path):
    image = Image.open(pictures[0])
    expected = captioner.caption(image)
    rgba = image.convert("RGBA")  # opaque alpha changes nothing
    assert captioner.caption(rgba) == expected
    # A file stored sideways with an EXIF tag saying "rotate 90" is captioned as displayed.
    exif = Image.Exif()
    exif[0x0112] = 8  # viewers rotate 90 degrees clockwise... of the stored pixels, 270 counter-clockwise
    image.convert("RGB").rotate(-90, expand=True).save(tmp_path / "sideways.png", exif=exif)
    assert captioner.to_picture(tmp_path / "sideways.png").tobytes() == image.convert("RGB").tobytes()
    assert captioner.to_picture(Image.open(tmp_path / "sideways.png")).tobytes() == image.convert("RGB").tobytes()
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="cannot read .*empty.jpg: UnidentifiedImageError"):
        captioner.caption(tmp_path / "empty.jpg")


def test_decoding_strategies_and_options_pass_through(captioner, pictures):
    greedy = captioner.caption(pictures)
    assert captioner.caption(pictures, strategy="beam", beam_size=1) == greedy
    assert max(len(c.split()) for c in greedy) > 2
    assert all(len(c.split()) <= 2 for c in captioner.caption(pictures, strategy="beam", beam_size=3, max_length=2))
    first = captioner.caption(pictures, strategy="sample", seed=3, temperature=1.5)
    assert captioner.caption(pictures, strategy="sample", seed=3, temperature=1.5) == first
    # One random stream per call: the same image in successive batches gets fresh draws.
    repeated = captioner.caption([pictures[0]] * 6, strategy="sample", seed=3, temperature=2.0, batch_size=1)
    assert len(set(repeated)) > 1
    with pytest.raises(ValueError, match="beam_size is an option of the beam strategy, not of 'greedy'"):
        captioner.caption(pictures, strategy="greedy", beam_size=3)
    with pytest.raises(ValueError, match="temperature is an option of the sample strategy"):
        captioner.caption(pictures, temperature=0.5)  # greedy by default
    with pytest.raises(ValueError, match="temperature"):
        captioner.caption(pictures, strategy="sample", temperature=0)


def test_bad_inputs_are_refused_with_a_clear_error(captioner):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        captioner.caption(torch.full((3, 8, 8), 2.0))  # a normalised tensor, not an image
    with pytest.raises(ValueError, match="C, H, W"):
        captioner.caption(torch.zeros(8, 8))
    with pytest.raises(TypeError, match="path, a PIL image"):
        captioner.caption(42)
