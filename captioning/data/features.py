"""Frozen-encoder feature cache: run the CNN once per split, then train on the vectors.

A cache file is named by a key over everything that changes the features: the image files
(path, size, modification time, or the bytes when the images are embedded), the backbone, its
weights id, the image size and the pooling grid. A change of any of them gives a new file; a stale
one is never read.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import PIL
import torch
import torchvision
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from captioning.data.images import ImageSource, load_rgb
from captioning.models.encoder import (
    RANDOM_INIT_SEED,
    ImageEncoder,
    build_transform,
    default_weights,
)

CACHE_FORMAT = 1  # bump when the transform or the file layout changes


def _source_signature(source: ImageSource) -> list:
    """What identifies an image's content without reading it.

    The change time is the one no tool sets back: a file rewritten with the same size and its old
    modification time restored (``cp -p``, ``rsync --times``) still gets a new ``st_ctime_ns``.
    """
    if isinstance(source, bytes):
        return [hashlib.sha1(source).hexdigest()]
    stat = os.stat(source)
    return [os.fspath(source), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


def cache_key(
    sources: Sequence[ImageSource], backbone: str, pretrained: bool, image_size: int, spatial_grid: int
) -> str:
    """A hex digest naming the features of ``sources`` under this encoder configuration."""
    weights = str(default_weights(backbone)) if pretrained else f"random-init-seed{RANDOM_INIT_SEED}"
    # The decoders and resizers of another Pillow, or the kernels of another torch, give other features.
    versions = [torch.__version__, torchvision.__version__, PIL.__version__]
    header = [CACHE_FORMAT, backbone, weights, image_size, spatial_grid, versions]
    digest = hashlib.sha256(json.dumps(header).encode())
    for source in sources:
        digest.update(json.dumps(_source_signature(source)).encode())
    return digest.hexdigest()[:20]


class ImageFiles(Dataset):
    """Images as normalised tensors, in the order of ``sources``."""

    def __init__(self, sources: Sequence[ImageSource], backbone: str, image_size: int) -> None:
        self.sources = sources
        self.image_size = image_size
        self.transform = build_transform(backbone, image_size)

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> Tensor:
        source = self.sources[index]
        try:
            image = load_rgb(source, self.image_size)
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            name = "embedded image" if isinstance(source, bytes) else os.fspath(source)
            raise ValueError(f"cannot read {name} ({error}): fix or remove the file from the data set") from error
        return self.transform(image)


@torch.inference_mode()
def compute_features(
    sources: Sequence[ImageSource],
    encoder: ImageEncoder,
    backbone: str,
    image_size: int,
    batch_size: int = 64,
    num_workers: int = 2,
    description: str = "features",
) -> Tensor:
    """(N, D) float16 features of every image (float16 halves the cache; the decoder casts back)."""
    encoder.eval()
    device = next(encoder.parameters()).device
    loader = DataLoader(ImageFiles(sources, backbone, image_size), batch_size=batch_size, num_workers=num_workers)
    chunks = [encoder(images.to(device)).half().cpu() for images in tqdm(loader, desc=description, unit="batch")]
    return torch.cat(chunks) if chunks else torch.empty(0, encoder.feature_dim, dtype=torch.float16)


def load_or_compute(
    cache_dir: str | os.PathLike,
    name: str,
    sources: Sequence[ImageSource],
    backbone: str,
    pretrained: bool,
    image_size: int,
    spatial_grid: int,
    num_workers: int = 2,
    compute: bool = True,
    device: torch.device | str = "cpu",
) -> Tensor | None:
    """Return the cached features of ``sources``, computing them on ``device`` and writing them first if needed.

    With ``compute=False`` a missing cache gives ``None`` (processes other than the first wait for
    the first to write it instead of all running the CNN).
    """
    key = cache_key(sources, backbone, pretrained, image_size, spatial_grid)
    path = Path(cache_dir) / f"{name}-{backbone}-{image_size}px-g{spatial_grid}-{key}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    if not compute:
        return None
    # Building the CNN (its initialisation) and the loader's worker seeds draw from torch's random
    # stream: fork it, so a cold cache trains exactly as a warm one does for the same seed.
    with torch.random.fork_rng(devices=[]):
        encoder = ImageEncoder(backbone, pretrained=pretrained, spatial_grid=spatial_grid).to(device)
        features = compute_features(
            sources, encoder, backbone, image_size, num_workers=num_workers, description=f"features {name}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    torch.save(features, partial)
    os.replace(partial, path)  # atomic: readers see the whole file or none
    return features
