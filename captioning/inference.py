"""The Python API for captioning images with a trained checkpoint.

    from captioning.inference import Captioner
    captioner = Captioner.from_checkpoint("runs/shapes/latest/checkpoints/best.ckpt")
    captioner.caption("photo.jpg")                              # -> "a dog runs on the grass"
    captioner.caption(["a.jpg", pil_image, tensor], strategy="beam", beam_size=5)  # -> [str, str, str]

Every input goes through the same path: upright RGB picture (``load_rgb`` / ``to_rgb``) ->
the one transform of the encoder's weights (``build_transform``) -> encoder -> decoder. So a
file, the PIL image read from it and its tensor get the same caption. (One nuance: a JPEG given
by path is decoded at a reduced scale when the model's input size allows, as in training, so
its pixels can differ by a level or two from a full-size decode handed in as a PIL image.)

For folders of thousands of images use ``captioning caption`` (or ``captioning.caption.caption``):
it reads files in parallel workers, skips unreadable ones, streams and resumes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageOps
from torch import Tensor
from torchvision.transforms.functional import to_pil_image

from captioning.data.images import DEFAULT_MAX_PIXELS, READ_ERRORS, describe_error, load_rgb, to_rgb
from captioning.decoding import Decoded, row_generators
from captioning.lit.captioner import CaptioningModule, load_captioner
from captioning.models.encoder import build_transform

ImageInput = str | os.PathLike | Image.Image | Tensor
"""A path, a PIL image, or an image tensor (C, H, W) with C in {1, 3, 4}: uint8 in 0-255 or float
in 0-1, not normalised (what ``torchvision.io.decode_image`` or ``ToTensor`` give)."""


class Captioner:
    """A trained captioning model with its preprocessing, ready to describe images.

    Args:
        model: A ``CaptioningModule`` (e.g. from ``load_captioner``); it is put in eval mode.
        device: Where to run it; ``None`` keeps the model's device.
        max_pixels: Images over this many pixels are refused (decompression-bomb guard).
    """

    def __init__(
        self,
        model: CaptioningModule,
        device: str | torch.device | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.model = model.eval() if device is None else model.to(device).eval()
        self.backbone: str = model.hparams.backbone
        self.image_size: int = model.hparams.image_size
        self.transform = build_transform(self.backbone, self.image_size)
        self.max_pixels = max_pixels

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu", **kwargs) -> Captioner:
        """Load a ``.ckpt`` written by ``captioning fit`` (self-contained: vocabulary and encoder inside)."""
        return cls(load_captioner(path, map_location=device), device=device, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- preprocessing -------------------------------------------------------------------------

    def to_picture(self, image: ImageInput) -> Image.Image:
        """Any accepted input -> upright RGB PIL image."""
        if isinstance(image, (str, os.PathLike)):
            try:
                return load_rgb(Path(image).read_bytes(), self.image_size, self.max_pixels)
            except READ_ERRORS as error:
                raise ValueError(f"cannot read {os.fspath(image)}: {describe_error(error)}") from error
        if isinstance(image, Image.Image):
            return to_rgb(ImageOps.exif_transpose(image))  # as a file by path: upright
        if isinstance(image, Tensor):
            if image.dim() != 3 or image.size(0) not in (1, 3, 4):
                raise ValueError(f"an image tensor must be (C, H, W) with C in 1, 3, 4; got {tuple(image.shape)}")
            if image.is_floating_point() and (image.min() < 0 or image.max() > 1):
                raise ValueError(
                    "a float image tensor must hold values in [0, 1] (not normalised); normalisation is done here"
                )
            if image.is_floating_point():  # to_pil_image would truncate 254.99 to 254
                image = image.mul(255).round().to(torch.uint8)
            return to_rgb(to_pil_image(image.detach().cpu()))
        raise TypeError(f"cannot caption a {type(image).__name__}: pass a path, a PIL image or a (C, H, W) tensor")

    def preprocess(self, images: Sequence[ImageInput]) -> Tensor:
        """(B, 3, H, W) normalised batch, on the model's device."""
        return torch.stack([self.transform(self.to_picture(image)) for image in images]).to(self.device)

    # -- captioning ----------------------------------------------------------------------------

    def generate(self, inputs: Tensor, strategy: str = "greedy", **options) -> Decoded:
        """Decode a prepared batch: (B, 3, H, W) normalised images or (B, D) encoder features.

        ``options`` are those of the strategy; ``sample`` takes a ``generator`` on the model's device.
        """
        return self.model.generate(inputs.to(self.device), strategy=strategy, **options)

    def captions(self, decoded: Decoded) -> list[str]:
        return self.model.captions(decoded)

    def caption(
        self,
        images: ImageInput | Sequence[ImageInput],
        strategy: str = "greedy",
        batch_size: int = 64,
        seed: int | None = None,
        **options,
    ) -> str | list[str]:
        """Caption one image (-> str) or several (-> list[str], in order).

        Args:
            images: A path, PIL image or (C, H, W) tensor, a list of them, or a (B, C, H, W) tensor.
            strategy: ``greedy``, ``sample`` or ``beam`` (see ``captioning.decoding``).
            batch_size: Images decoded at once.
            seed: Random seed of ``sample``: image i of the call draws from its own stream, seeded by
                ``seed`` and i, so the result does not depend on ``batch_size``.
            **options: Options of the strategy: ``beam_size``, ``length_penalty``,
                ``no_repeat_ngram_size`` (beam); ``temperature``, ``top_k``, ``top_p`` (sample);
                ``max_length``, ``min_length`` (all).
        """
        single = not isinstance(images, (list, tuple)) and not (isinstance(images, Tensor) and images.dim() == 4)
        items = [images] if single else list(images)
        generators = None
        if strategy == "sample" and seed is not None:
            generators = row_generators(seed, [str(i) for i in range(len(items))])
        captions: list[str] = []
        for start in range(0, len(items), batch_size):
            batch = self.preprocess(items[start : start + batch_size])
            if generators is not None:
                options["generator"] = generators[start : start + batch_size]
            captions += self.captions(self.generate(batch, strategy, **options))
        return captions[0] if single else captions
